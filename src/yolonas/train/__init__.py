"""Training: the PPYoloE loss and its assigners, the trainer (AMP, EMA, DDP, resume), its recipes, knowledge
distillation and pseudo-labelling."""

from yolonas.train.config import DistillConfig, TrainConfig, apply_overrides, load_recipe, recipe_names
from yolonas.train.distill import DistillLoss
from yolonas.train.loss import PPYoloELoss
from yolonas.train.pseudo import PseudoLabelReport, mix_data_yaml, pseudo_label
from yolonas.train.trainer import Trainer, TrainResult, train

__all__ = ["DistillConfig", "DistillLoss", "PPYoloELoss", "PseudoLabelReport", "TrainConfig", "TrainResult", "Trainer",
           "apply_overrides", "load_recipe", "mix_data_yaml", "pseudo_label", "recipe_names", "train"]
