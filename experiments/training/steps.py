"""The pure, jitted train and eval steps over one explicit state pytree, and the optimizer's
learning-rate schedule.

Why split/merge with `jax.jit` rather than `nnx.jit`: the train step is a pure function
`(state, batch, carry) -> (state, carry, metrics)` over the pytree that `nnx.split` returns for
the model and its optimizer (`split_train_state`). (1) That pytree is exactly what orbax saves
and restores and what `jax.device_put` replicates over the mesh, so checkpointing and sharding
need no conversions at the call site; (2) `nnx.jit` walks the Python object graph on every
call, which costs more than a whole step of these small models on a CPU, while `jax.jit` over a
pytree dispatches straight to the compiled executable; (3) the state and the carry can be
donated, so XLA updates them in place. `nnx.merge` inside the traced function gives the loss
function an ordinary module to call, so task code still reads like NNX.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

__all__ = [
    "Batch",
    "LossFn",
    "cosine_schedule",
    "make_eval_step",
    "make_train_step",
    "param_count",
    "split_train_state",
]

Array = jax.Array
Batch = Mapping[str, Any]
# loss_fn(model, batch, carry) -> (scalar loss, (extra metrics {name: scalar}, new carry))
LossFn = Callable[[Any, Batch, Any], tuple[Array, tuple[dict[str, Array], Any]]]


def split_train_state(
    model: Any, tx: optax.GradientTransformation
) -> tuple[tuple[Any, Any], dict[str, Any]]:
    """Creates the `nnx.Optimizer` and splits both into graph definitions and one state pytree.

    Args:
        model: the freshly built model.
        tx: the optax transformation.

    Returns:
        `((model graphdef, optimizer graphdef), {"model": nnx.State, "optimizer": nnx.State})`.
        The optimizer holds no reference to the model (flax >= 0.11), so the two split apart;
        checkpoint names then read `model.lstm.weight_ih_l0`, `optimizer.opt_state.0.mu...`.
    """
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    model_def, model_state = nnx.split(model)
    opt_def, opt_state = nnx.split(optimizer)
    return (model_def, opt_def), {"model": model_state, "optimizer": opt_state}


def make_train_step(
    graphdef: tuple[Any, Any],
    loss_fn: LossFn,
    state_sharding: Any = None,
    *,
    donate: bool = True,
) -> Callable[[Any, Batch, Any], tuple[Any, Any, dict[str, Array]]]:
    """The jitted train step `(state, batch, carry) -> (state, carry, metrics)`.

    `state` is `{"model": nnx.State, "optimizer": nnx.State}` (see `split_train_state`).

    Args:
        graphdef: `(model graphdef, optimizer graphdef)` from `split_train_state`.
        loss_fn: `loss_fn(model, batch, carry) -> (loss, (metrics, new_carry))`; `carry` is
            any pytree threaded from step to step (None if unused).
        state_sharding: a sharding for the new state (e.g. replicated), or None.
        donate: donate `state` and `carry` to the step, so that XLA writes the new ones into
            their buffers (the arrays passed in are deleted; the caller keeps only the
            returned ones). The batch is not donated: no output has its shape, so its
            buffers could not be reused.

    Returns:
        The jitted function; `metrics` holds `loss` and the extras of `loss_fn`.
    """

    def train_step(state, batch, carry):
        model = nnx.merge(graphdef[0], state["model"])
        optimizer = nnx.merge(graphdef[1], state["optimizer"])

        def objective(model):
            return loss_fn(model, batch, carry)

        (loss, (metrics, new_carry)), grads = nnx.value_and_grad(objective, has_aux=True)(model)
        optimizer.update(model, grads)
        new_state = {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}
        if state_sharding is not None:
            new_state = jax.lax.with_sharding_constraint(new_state, state_sharding)
        return new_state, new_carry, {"loss": loss, **metrics}

    return jax.jit(train_step, donate_argnums=(0, 2) if donate else ())


def make_eval_step(
    graphdef: Any, eval_fn: Callable[[Any, Batch], Any], out_sharding: Any = None
) -> Callable[[Any, Batch], Any]:
    """The jitted eval step `(state, batch) -> eval_fn(model, batch)` with the model in eval mode.

    Args:
        graphdef: from `nnx.split(model)` (the state argument is the matching state).
        eval_fn: `(model, batch) -> pytree of arrays`.
        out_sharding: the results' sharding, e.g. replicated so that every host can read them
            (a result sharded over several hosts cannot be fetched with `jax.device_get`).
    """

    def eval_step(state, batch):
        model = nnx.merge(graphdef, state)
        model.eval()
        return eval_fn(model, batch)

    if out_sharding is None:
        return jax.jit(eval_step)
    return jax.jit(eval_step, out_shardings=out_sharding)


def cosine_schedule(lr: float, steps: int, warmup: int) -> optax.Schedule:
    """Linear warm-up to `lr` over `warmup` steps, then cosine decay to `lr / 100` at `steps`."""
    warmup = max(1, min(warmup, steps - 1)) if steps > 1 else 0
    if warmup == 0:
        return optax.constant_schedule(lr)
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, max(steps, warmup + 1), end_value=lr / 100
    )


def param_count(model: Any) -> int:
    """Number of scalars in the model's `nnx.Param`s."""
    leaves = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    return int(sum(np.prod(x.shape) for x in leaves))
