"""experiments.baseline: jaxlstm of a git revision, imported under its own name beside the
working tree's, computes what that revision computes."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxlstm
from experiments import baseline, training


def test_rename_imports_points_every_absolute_import_at_the_new_name():
    source = (
        "import jaxlstm\n"
        "import jaxlstm as jl\n"
        "from jaxlstm import lstm\n"
        "from jaxlstm.config import LSTMConfig\n"
        "    from jaxlstm.nnx import LSTM  # inside a function\n"
        "import jaxlstm_tools\n"
        "x = 'from jaxlstm import nothing'\n"
    )
    assert baseline.rename_imports(source, "jaxlstm_at_abc") == (
        "import jaxlstm_at_abc as jaxlstm\n"
        "import jaxlstm_at_abc as jl\n"
        "from jaxlstm_at_abc import lstm\n"
        "from jaxlstm_at_abc.config import LSTMConfig\n"
        "    from jaxlstm_at_abc.nnx import LSTM  # inside a function\n"
        "import jaxlstm_tools\n"
        "x = 'from jaxlstm import nothing'\n"
    )


def test_head_is_a_separate_package_that_computes_the_same():
    old = baseline.load_baseline("HEAD")
    module = old.module
    assert module is not jaxlstm and module.__name__ == f"jaxlstm_at_{old.short}"
    assert old.name == f"jaxlstm@{old.short}" and old.commit.startswith(old.short)
    assert module.lstm.__module__.startswith(module.__name__), "its own code, not ours"
    config = module.LSTMConfig(3, 5, num_layers=2, bidirectional=True)
    params = module.init_params(jax.random.key(0), config)
    x = jax.random.normal(jax.random.key(1), (7, 2, 3))
    theirs = module.lstm(params, x, config=config)[0]
    ours = jaxlstm.lstm(
        params, x, config=jaxlstm.LSTMConfig(3, 5, num_layers=2, bidirectional=True)
    )[0]
    np.testing.assert_allclose(np.asarray(theirs), np.asarray(ours), rtol=1e-6, atol=1e-6)
    assert baseline.load_baseline("HEAD").module is module, "imported once per process"


def test_a_revision_that_does_not_exist_is_a_usage_error():
    with pytest.raises(
        training.UsageError,
        match=r"--baseline must name a git revision .* "
        r"got 'v999-nope'",
    ):
        baseline.load_baseline("v999-nope")
