"""``EWTHTrainer``: the trainer ``tools/train_net.py`` runs, the recipe and the reliability layer together.

Every method it changes of fastreid's ``DefaultTrainer``, and which layer changes it:

================================  =====================================================================
``__init__``                      recipe: device fallback, sampler check, epoch warm-up, centre optimizer,
                                  a one-loss run's term logged by name;
                                  reliability: ``training_state`` checkpointed, non-finite-loss guard
``checkpointer``                  reliability: every checkpoint written atomically
``build_model``                   recipe: device fallback
``build_optimizer``               recipe: centre-loss centres left to their own optimizer
``build_lr_scheduler``            recipe: warm-up in epochs, decays at absolute epochs
``build_train_loader``            recipe: datasets built from the config (own data);
                                  reliability: a loader that restarts at any batch
``build_test_loader``             recipe: datasets built from the config, workers sized to the machine;
                                  reliability: workers left alone by stop signals
``build_evaluator``               recipe: the exact evaluator
``build_hooks``                   reliability: checkpoint hook on every process, gathering their state
``train``                         reliability: starts at any step, stops on a signal with a checkpoint
``resume_or_load``                reliability: exact resume
``before_train``                  reliability: random states restored
================================  =====================================================================
"""
from ..reliability import ReliableTraining
from .recipe import RecipeTrainer

__all__ = ["EWTHTrainer"]


class EWTHTrainer(ReliableTraining, RecipeTrainer):
    """:class:`RecipeTrainer` (what is trained) with :class:`ReliableTraining` (how the run survives)."""
