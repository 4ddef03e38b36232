"""facescan.training: the engine that trains one variant (torch only, no Kedro).

- :func:`fit` trains one run (skip / resume / fresh; one worker in-process or N via torch elastic)
  and returns its best checkpoint;
- :func:`train_one_epoch`, :func:`evaluate`, :func:`predict_logits`: the engine functions;
- :class:`TrainConfig`: the validated ``training`` parameters;
- :func:`inference_settings`: device, autocast dtype and memory format for scoring;
- :func:`model_from_checkpoint`: a trained model back from a checkpoint dict.

``python -m facescan.training`` trains one variant under torchrun on several nodes (docs/scaling.md).
"""

from facescan.training.checkpoint import CHECKPOINT_FORMAT, model_from_checkpoint
from facescan.training.config import DistributedConfig, TrainConfig
from facescan.training.distributed import WorkerFailedError
from facescan.training.engine import NonFiniteLossError, evaluate, predict_logits, train_one_epoch
from facescan.training.fit import data_fingerprint, fit, run_fingerprint
from facescan.training.loop import TrainingDivergedError, class_weight_tensor
from facescan.training.runtime import inference_settings

__all__ = [
    "CHECKPOINT_FORMAT",
    "DistributedConfig",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainingDivergedError",
    "WorkerFailedError",
    "class_weight_tensor",
    "data_fingerprint",
    "evaluate",
    "fit",
    "inference_settings",
    "model_from_checkpoint",
    "predict_logits",
    "run_fingerprint",
    "train_one_epoch",
]
