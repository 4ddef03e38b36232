"""facescan.training: the engine that trains one variant (torch only, no Kedro).

- :func:`fit` trains one run (skip / resume / fresh; one worker in-process or N via torch elastic)
  and returns its best checkpoint;
- :func:`train_one_epoch`, :func:`evaluate`: the engine functions;
- :class:`TrainConfig`: the validated ``training`` parameters.

The runtime (device, precision, autocast, threads) is :mod:`facescan.runtime` and the checkpoint
contract :mod:`facescan.checkpoint`: training and evaluation both import them.

``python -m facescan.training`` trains one variant under torchrun on several nodes (docs/scaling.md).
"""

from facescan.training.config import DistributedConfig, TrainConfig
from facescan.training.distributed import WorkerFailedError
from facescan.training.engine import NonFiniteLossError, evaluate, train_one_epoch
from facescan.training.fit import data_fingerprint, fit, run_fingerprint
from facescan.training.trainer import TrainingDivergedError, class_weight_tensor

__all__ = [
    "DistributedConfig",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainingDivergedError",
    "WorkerFailedError",
    "class_weight_tensor",
    "data_fingerprint",
    "evaluate",
    "fit",
    "run_fingerprint",
    "train_one_epoch",
]
