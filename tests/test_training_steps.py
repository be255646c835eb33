"""experiments.training.steps (and the loop's use of them): the jitted train step donates the
state and the carried (h, c) without changing a single bit of the results."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from experiments import sine, training

pytestmark = pytest.mark.usefixtures("compilation_cache")


def _run(donate: bool, steps: int = 3):
    """`steps` sine train steps with a carried state; returns (inputs of step 1, outputs)."""
    model = sine.SineModel(8, 1, rngs=nnx.Rngs(0))
    graphdef, state = training.split_train_state(model, optax.adam(1e-2))
    carry = (jnp.zeros((1, 4, 8)), jnp.ones((1, 4, 8)))
    step_fn = training.make_train_step(graphdef, sine.loss_fn, donate=donate)
    first_inputs = (state, carry)
    losses = []
    for step in range(steps):
        batch = {"windows": jnp.asarray(sine.train_batch(0, step, 4)["windows"])}
        state, carry, metrics = step_fn(state, batch, carry)
        losses.append(metrics["loss"])
    return first_inputs, (state, carry, losses)


def test_donation_changes_no_result():
    (kept_state, kept_carry), plain = _run(donate=False)
    (given_state, given_carry), donated = _run(donate=True)
    plain_leaves, donated_leaves = jax.tree.leaves(plain), jax.tree.leaves(donated)
    assert len(plain_leaves) == len(donated_leaves) > 10
    for a, b in zip(plain_leaves, donated_leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The donated step really took the buffers of the state and the carry ...
    assert all(x.is_deleted() for x in jax.tree.leaves((given_state, given_carry)))
    # ... and the one without donation left them alone.
    assert not any(x.is_deleted() for x in jax.tree.leaves((kept_state, kept_carry)))


def test_train_keeps_the_tasks_own_arrays_alive(tmp_path):
    """The loop donates its own copies: a model the task built beforehand stays usable."""
    prebuilt = sine.SineModel(4, 1, rngs=nnx.Rngs(3))
    zeros = jnp.zeros((1, 2, 4))
    task = training.Task(
        name="t",
        make_model=lambda rngs: prebuilt,
        tx=optax.adam(1e-2),
        loss_fn=sine.loss_fn,
        batch_fn=lambda step: sine.train_batch(0, step, 2),
        config={"model": {"task": "t"}, "run": {}},
        init_carry=lambda: (zeros, zeros),  # one array twice: must not be donated twice
    )
    result = training.train(task, steps=2, seed=0, out_dir=str(tmp_path), progress=False)
    assert not zeros.is_deleted()
    assert not any(x.is_deleted() for x in jax.tree.leaves(nnx.state(prebuilt)))
    assert result.end_step == 2 and len(result.history) == 2


def test_cosine_schedule_warms_up_then_decays_to_a_hundredth():
    schedule = training.cosine_schedule(1e-2, 100, 10)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(1e-2)
    assert float(schedule(100)) == pytest.approx(1e-4)
    assert float(training.cosine_schedule(1e-2, 1, 10)(0)) == pytest.approx(1e-2)
