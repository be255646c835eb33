"""The training machinery every experiment shares, one concept a module:

- `cli`: the shared flags and their checks, `UsageError`, and `entry_point` (a user error
  becomes one line on stderr and exit status 2);
- `distributed`: `start_devices` (what a `main` calls first: `start_distributed`, the
  multi-process start-up, then the mesh);
- `mesh`: the `data` mesh over every device, batch sharding, parameter replication;
- `steps`: the pure jitted train and eval steps over one state pytree, the schedule;
- `checkpoints`: orbax checkpoints and `CheckpointError`;
- `metrics`: the per-step metrics log (`MetricsLog`) and JSON summaries;
- `outputs`: the rule that a run never silently replaces another run's results;
- `plots`: a headless pyplot, figure saving, centred smoothing;
- `loop`: `Task`, `train`, `evaluate`, `finish`.

Experiments import the names below from `experiments.training`.
"""

from experiments.training.checkpoints import (
    CheckpointError,
    Checkpoints,
    diff_configs,
    named_leaves,
)
from experiments.training.cli import (
    ArgumentParser,
    HelpFormatter,
    UsageError,
    base_parser,
    check_common_args,
    entry_point,
    parse_args,
    train_options,
)
from experiments.training.distributed import start_devices, start_distributed
from experiments.training.loop import Task, TrainResult, evaluate, finish, train
from experiments.training.mesh import (
    DATA_AXIS,
    check_batch_size,
    data_mesh,
    replicate,
    shard_batch,
)
from experiments.training.metrics import METRICS_FILE, MetricsLog, read_metrics, write_json
from experiments.training.outputs import SUMMARY_FILE, check_out_dir, default_out_dir
from experiments.training.plots import (
    centred_mean,
    missing_labels,
    pyplot,
    save_figures,
    smoothing_window,
)
from experiments.training.steps import (
    Batch,
    LossFn,
    cosine_schedule,
    make_eval_step,
    make_train_step,
    param_count,
    split_train_state,
)

__all__ = [
    "DATA_AXIS",
    "METRICS_FILE",
    "SUMMARY_FILE",
    "ArgumentParser",
    "Batch",
    "CheckpointError",
    "Checkpoints",
    "HelpFormatter",
    "LossFn",
    "MetricsLog",
    "Task",
    "TrainResult",
    "UsageError",
    "base_parser",
    "centred_mean",
    "check_batch_size",
    "check_common_args",
    "check_out_dir",
    "cosine_schedule",
    "data_mesh",
    "default_out_dir",
    "diff_configs",
    "entry_point",
    "evaluate",
    "finish",
    "make_eval_step",
    "make_train_step",
    "missing_labels",
    "named_leaves",
    "param_count",
    "parse_args",
    "pyplot",
    "read_metrics",
    "replicate",
    "save_figures",
    "shard_batch",
    "smoothing_window",
    "split_train_state",
    "start_devices",
    "start_distributed",
    "train",
    "train_options",
    "write_json",
]
