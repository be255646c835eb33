"""experiments.training.outputs: a run refuses an --out-dir holding another run's results
(unless --overwrite), and re-running the same command into its own directory keeps working."""

from __future__ import annotations

import json

import pytest

from experiments import sine, training

pytestmark = pytest.mark.usefixtures("compilation_cache")

CONFIG = {"model": {"task": "sine", "hidden_size": 8}, "run": {"steps": 12, "seed": 0}}


def _write_results(out_dir, config) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({"config": config, "loss": 1.0}))


def test_an_empty_or_new_directory_is_free(tmp_path):
    training.check_out_dir(str(tmp_path / "new"), CONFIG)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    training.check_out_dir(str(tmp_path / "other"), CONFIG)


def test_the_same_configuration_may_write_again(tmp_path):
    _write_results(tmp_path, CONFIG)
    training.check_out_dir(str(tmp_path), json.loads(json.dumps(CONFIG)))


def test_another_configuration_is_refused_naming_the_differences(tmp_path):
    _write_results(tmp_path, CONFIG)
    other = {"model": {"task": "classify:digits", "hidden_size": 8}, "run": {"steps": 9, "seed": 0}}
    with pytest.raises(training.UsageError) as e:
        training.check_out_dir(str(tmp_path), other)
    message = str(e.value)
    assert f"--out-dir {str(tmp_path)!r} holds the results of a different run" in message
    assert "model.task: the earlier run has 'sine', this run has 'classify:digits'" in message
    assert "run.steps: the earlier run has 12, this run has 9" in message
    assert "pass --overwrite" in message
    training.check_out_dir(str(tmp_path), other, overwrite=True)


def test_resuming_needs_only_the_same_model(tmp_path):
    _write_results(tmp_path, CONFIG)
    longer = {**CONFIG, "run": {"steps": 24, "seed": 0}}
    training.check_out_dir(str(tmp_path), longer, resume=True)
    with pytest.raises(training.UsageError, match=r"model\.hidden_size"):
        wider = {**longer, "model": {"task": "sine", "hidden_size": 9}}
        training.check_out_dir(str(tmp_path), wider, resume=True)


def test_results_without_a_configuration_are_refused(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(training.UsageError, match="names no run configuration"):
        training.check_out_dir(str(tmp_path), CONFIG)
    training.check_out_dir(str(tmp_path), CONFIG, overwrite=True)


def test_an_experiment_refuses_another_runs_directory(tmp_path, capsys):
    out = str(tmp_path / "out")
    quick = ["--quick", "--steps", "2", "--no-progress", "--no-plots", "--out-dir", out]
    first = sine.main(quick)
    assert sine.main(quick)["teacher_forced_mse"] == first["teacher_forced_mse"]  # same command
    with pytest.raises(SystemExit) as e:
        training.entry_point(sine.main, [*quick, "--hidden-size", "16"])
    assert e.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "holds the results of a different run" in err[0]
    assert "model.hidden_size: the earlier run has 8, this run has 16" in err[0]
    with open(f"{out}/metrics.json") as f:
        assert json.load(f)["config"]["model"]["hidden_size"] == 8, "nothing was replaced"
    sine.main([*quick, "--hidden-size", "16", "--overwrite"])
    with open(f"{out}/metrics.json") as f:
        assert json.load(f)["config"]["model"]["hidden_size"] == 16
