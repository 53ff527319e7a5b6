"""``EWTHLoss``: the EWTH loss family as an entry of ``LOSS_REGISTRY``; reads ``MODEL.LOSSES.EWTH`` and calls
:func:`fastreid_ewth.losses.ewth_loss`.

Its options, their defaults and their checks are those of
:data:`fastreid_ewth.losses.options.EWTH_OPTIONS`, the same table ``ewth_loss`` and ``add_ewth_config``
use: the module accepts and refuses exactly what the function does, with the same messages.
"""
from fastreid.utils.events import get_event_storage

from ..files import DIAGNOSTICS_PREFIX
from ..losses import ewth_loss
from ..losses.diagnostics import diagnostic_values
from ..losses.options import CONFIG_NODE, check_ewth_options, ewth_config_defaults, ewth_options_from_config
from .registry import LOSS_REGISTRY, ReidLoss

__all__ = ["EWTHLoss"]


@LOSS_REGISTRY.register()
class EWTHLoss(ReidLoss):
    """The EWTH loss family as a module: ``forward`` returns its named terms, each times ``scale``.

    In training (``EWTHBaseline``, inside fastreid's ``EventStorage``) it also puts the batch's mining
    diagnostics, computed by the loss from its own mining, into that storage as ``diag/hinge_active``,
    ``diag/d_ap``, ``diag/d_an`` and, for EW variants, ``diag/ew_kept``; fastreid's writers take them to
    ``metrics.json`` and tensorboard. They are not losses, so they stay out of the returned dict.

    Attributes:
        options: every option (variant, margins, threshold, norm_feat, scale) as checked, defaults
            filled in; ``forward`` passes them to ``ewth_loss`` unchanged.
    """

    reads = ("feature", "labels", "classifier_weight")
    config_node = CONFIG_NODE
    defaults = ewth_config_defaults()
    terms = ("loss_triplet", "loss_mean_neg", "loss_ew")  # the variant decides which of them it computes
    identity_batches = True

    def __init__(self, **options):
        options = check_ewth_options(**options)
        super(ReidLoss, self).__init__()  # the scale is one of the options, checked by their table
        self.options = options

    @classmethod
    def from_config(cls, cfg):
        """The loss ``cfg.MODEL.LOSSES.EWTH`` describes; a bad value raises ``ValueError`` naming its key."""
        return cls(**ewth_options_from_config(cfg.MODEL.LOSSES.EWTH))

    @classmethod
    def check_config(cls, cfg):
        cls.from_config(cfg)  # building it is cheap: it has no parameters

    @property
    def scale(self):
        return self.options["scale"]

    def forward(self, features, targets, classifier_weight, diagnostics=False):
        """features: N×D metric feature; classifier_weight: C×D (detached inside the loss).

        Returns the dict of terms, or with ``diagnostics`` the pair ``(terms, diagnostics)`` of
        :func:`~fastreid_ewth.losses.ewth_loss`: the batch's mining diagnostics from this very forward.
        """
        return ewth_loss(features, targets, classifier_weight, diagnostics=diagnostics, **self.options)

    def training_terms(self, features, targets, classifier_weight):
        storage = _current_storage()  # outside fastreid's training loop (tests, notebooks): nothing to log to
        if storage is None:
            return self(features, targets, classifier_weight)
        terms, diagnostics = self(features, targets, classifier_weight, diagnostics=True)
        # one device-to-host copy for all of them
        for name, value in diagnostic_values(diagnostics).items():
            storage.put_scalar(DIAGNOSTICS_PREFIX + name, value)
        return terms

    def extra_repr(self):
        return ", ".join("{}={!r}".format(k, v) for k, v in self.options.items())


def _current_storage():
    """fastreid's innermost ``EventStorage``, or ``None`` outside ``with EventStorage(...)``."""
    try:
        return get_event_storage()
    except (AssertionError, IndexError):  # it asserts a non-empty stack (IndexError under python -O)
        return None
