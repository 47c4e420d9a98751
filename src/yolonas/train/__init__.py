"""Training: the PPYoloE loss and its assigners, the trainer (AMP, EMA, DDP, resume) and its recipes."""

from yolonas.train.config import TrainConfig, apply_overrides, load_recipe, recipe_names
from yolonas.train.loss import PPYoloELoss
from yolonas.train.trainer import Trainer, TrainResult, train

__all__ = ["PPYoloELoss", "TrainConfig", "TrainResult", "Trainer", "apply_overrides", "load_recipe", "recipe_names",
           "train"]
