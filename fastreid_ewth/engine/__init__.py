"""Training and evaluation: run set-up, the recipe trainer, ``EWTHTrainer``, ``--eval-only``."""
from ..reliability.launch import launch
from .evaluate import evaluate_checkpoint
from .recipe import RecipeTrainer
from .setup import resolve_device, setup_cfg, validate_run
from .trainer import EWTHTrainer

__all__ = ["EWTHTrainer", "RecipeTrainer", "evaluate_checkpoint", "launch", "resolve_device", "setup_cfg",
           "validate_run"]
