"""The one training loop every technique that trains goes through."""

from compress.train.evaluate import evaluate
from compress.train.loop import Objective, StepContext, TaskObjective, TrainConfig, TrainResult, train

__all__ = ["Objective", "StepContext", "TaskObjective", "TrainConfig", "TrainResult", "evaluate", "train"]
