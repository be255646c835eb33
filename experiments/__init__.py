"""Runnable experiments built on jaxlstm: `python -m experiments.sine`,
`python -m experiments.classify` and `python -m experiments.benchmark`.

`experiments.training` holds the one shared training loop (jitted train/eval steps, data
sharding over devices, orbax checkpoints, JSON-lines metrics, progress bar, common flags).
"""
