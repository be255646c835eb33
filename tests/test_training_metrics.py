"""experiments.training.metrics: the per-step JSON-lines log, fetched in batches, cut back to
the resumed step."""

from __future__ import annotations

import jax.numpy as jnp

from experiments import training


def test_metrics_log_writes_one_record_per_step(tmp_path):
    with training.MetricsLog(str(tmp_path), lr_fn=lambda step: 0.1 * step) as log:
        log.add(1, {"loss": jnp.float32(2.0)})
        log.add(2, {"loss": jnp.float32(1.0), "accuracy": jnp.float32(0.5)})
        assert training.read_metrics(tmp_path) == [], "nothing is fetched before flush"
        last = log.flush()
        assert last["step"] == 2 and last["accuracy"] == 0.5
        assert log.flush() is None
        log.add(3, {"loss": jnp.float32(0.5)})
    records = training.read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3], "close writes what is queued"
    assert [r["lr"] for r in records] == [0.0, 0.1, 0.2]  # the rate of update step - 1
    assert all(r["time"] >= 0 for r in records)


def test_a_resumed_log_keeps_only_the_steps_before_the_resume(tmp_path):
    with training.MetricsLog(str(tmp_path)) as log:
        for step in range(1, 11):
            log.add(step, {"loss": jnp.float32(step)})
    with training.MetricsLog(str(tmp_path), start_step=8) as log:
        log.add(9, {"loss": jnp.float32(-9)})
    records = training.read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 10))
    assert records[-1]["loss"] == -9
    with training.MetricsLog(str(tmp_path)):
        pass
    assert training.read_metrics(tmp_path) == [], "a fresh run starts a fresh log"


def test_a_log_that_does_not_write_leaves_no_file(tmp_path):
    with training.MetricsLog(str(tmp_path / "x"), write=False) as log:
        log.add(1, {"loss": jnp.float32(1)})
        assert log.flush()["loss"] == 1.0
    assert not (tmp_path / "x").exists()
