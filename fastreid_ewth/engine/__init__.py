"""Trainer and command-line helpers."""
from .trainer import EWTHTrainer, resolve_device
from .setup import setup_cfg

__all__ = ["EWTHTrainer", "resolve_device", "setup_cfg"]
