"""experiments.benchmark.environment: the load warning, and the environment line naming
torch's threads and the backend jaxlstm's cells ran on."""

from __future__ import annotations

import jaxlstm
from experiments.benchmark import environment


def test_load_warning_only_on_a_busy_machine():
    env = {"load_average": [0.2, 0.1, 0.1], "cpu_count": 2}
    assert environment.load_warning(env) is None
    warning = environment.load_warning({**env, "load_average": [1.7, 1.0, 1.0]})
    assert warning.startswith("warning: the load average is 1.70 (> 0.5)")


def test_environment_names_the_backend_jaxlstm_ran_on():
    env = environment.environment("fp32", scan=jaxlstm.ScanOptions(backend="xla"))
    assert (env["jaxlstm_backend"], env["jaxlstm_backend_requested"]) == ("xla", "xla")
    assert "; jaxlstm backend xla (--backend xla)" in environment.environment_line(env)
    default = environment.environment("fp32")
    assert default["jaxlstm_backend"] == jaxlstm.ScanOptions().resolve().backend
    assert default["jaxlstm_backend_requested"] is None
    line = environment.environment_line(default)
    assert f"jaxlstm backend {default['jaxlstm_backend']} (the library's dispatch)" in line
