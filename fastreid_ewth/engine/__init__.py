"""Training and evaluation: run set-up, the recipe trainer, ``EWTHTrainer``, ``--eval-only``."""
from ..reliability.launch import launch
from .evaluate import evaluate_checkpoint, load_trained_model
from .recipe import RecipeTrainer
from .setup import load_cfg, resolve_device, setup_cfg, validate_run
from .trainer import EWTHTrainer

__all__ = ["EWTHTrainer", "RecipeTrainer", "evaluate_checkpoint", "launch", "load_cfg", "load_trained_model",
           "resolve_device", "setup_cfg", "validate_run"]
