"""The distillation engine: ``fine_tune(student, teacher, data, FinetuneConfig(...))``.

Every pass that recovers accuracy with the teacher (distill, sparsify, prune, quantize) calls this.
"""

from edgekd.train.config import FinetuneConfig
from edgekd.train.hooks import Hook
from edgekd.train.trainer import TrainingError, TrainResult, evaluate, fine_tune

__all__ = ["FinetuneConfig", "Hook", "TrainResult", "TrainingError", "evaluate", "fine_tune"]
