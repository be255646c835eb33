"""Runnable experiments built on jaxlstm: `python -m experiments.sine`,
`python -m experiments.classify` and `python -m experiments.benchmark`.

`experiments.training` is the one shared training machinery (command line, distributed
start-up, device mesh, jitted steps, orbax checkpoints, metrics, output directories, plots,
the loop), one concept a module. `experiments.baseline` imports jaxlstm as it was at an
earlier git revision, for `python -m experiments.benchmark --baseline REV`.
"""
