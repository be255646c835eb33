"""experiments.training.cli: the shared flags, `--quick`, and the entry point that turns a user
error into one line on stderr and exit status 2 while other errors keep their traceback."""

from __future__ import annotations

import pytest

from experiments import sine, training

pytestmark = pytest.mark.usefixtures("compilation_cache")


def test_quick_defaults_yield_to_explicit_flags():
    args = training.parse_args(sine.parser(), ["--quick", "--hidden-size", "5"])
    assert args.hidden_size == 5 and args.steps == sine.QUICK["steps"]
    assert training.parse_args(sine.parser(), []).steps == sine.DEFAULTS["steps"]


def test_parser_errors_are_usage_errors():
    with pytest.raises(training.UsageError, match="unrecognized arguments: --nope"):
        sine.parser().parse_args(["--nope"])
    with pytest.raises(training.UsageError, match="argument --lr: invalid float value: 'fast'"):
        sine.parser().parse_args(["--lr", "fast"])


def test_entry_point_prints_one_line_and_exits_2(capsys):
    def main(argv):
        raise training.UsageError("--thing must be\n  a positive number, got -1")

    with pytest.raises(SystemExit) as e:
        training.entry_point(main, [])
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == "error: --thing must be a positive number, got -1\n"
    assert captured.out == ""


def test_entry_point_lets_other_errors_keep_their_traceback():
    def main(argv):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        training.entry_point(main, [])
    assert training.entry_point(lambda argv: {"argv": argv}, ["x"]) == {"argv": ["x"]}


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--steps", "ten"], "error: argument --steps: invalid int value: 'ten'"),
        (["--frobnicate"], "error: unrecognized arguments: --frobnicate"),
        (["--keep", "0"], "error: --keep must be a positive integer, got 0"),
        (
            ["--resume"],
            "error: --resume needs --checkpoint-dir DIR to resume from, got no --checkpoint-dir",
        ),
        (["--process-id", "1"], "error: --process-id needs --distributed, got it without"),
    ],
    ids=["type", "unknown", "value", "resume", "distributed"],
)
def test_command_line_errors_of_an_experiment(argv, line, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        training.entry_point(sine.main, ["--quick", "--out-dir", str(tmp_path), *argv])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [line]
    assert not (tmp_path / "metrics.json").exists(), "nothing ran"


def test_train_options_carry_every_shared_flag():
    args = training.parse_args(sine.parser(), ["--quick", "--overwrite", "--stop-at", "3"])
    options = training.train_options(args, "out")
    assert options["out_dir"] == "out" and options["overwrite"] is True
    assert options["stop_at"] == 3 and options["steps"] == sine.QUICK["steps"]
    assert options["progress"] is True
