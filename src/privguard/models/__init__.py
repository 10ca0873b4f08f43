"""Targets: architectures, training with regularization knobs, safe persistence."""

from privguard.models.target import Target, from_sklearn, load_target, train_target
from privguard.models.train import TrainConfig, TrainingRecipe

__all__ = ["Target", "TrainConfig", "TrainingRecipe", "from_sklearn", "load_target", "train_target"]
