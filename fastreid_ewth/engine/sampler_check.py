"""Check, before training starts, that every process gets a valid P×K identity batch."""
__all__ = ["check_identity_sampler", "IDENTITY_SAMPLERS", "METRIC_LOSSES"]

IDENTITY_SAMPLERS = ("NaiveIdentitySampler", "BalancedIdentitySampler", "SetReWeightSampler")
# losses that mine positives and negatives inside the batch
METRIC_LOSSES = ("EWTHLoss", "TripletLoss", "CircleLoss", "Cosface")


def check_identity_sampler(cfg, world_size=1):
    """Raise ``ValueError`` naming the keys to change when the batch cannot hold P×K identities.

    Needed when a metric loss is trained: every anchor needs another image of its identity (K >= 2) and
    another identity (P >= 2) in its process's batch, and the batch must be P×K exactly.
    """
    names = tuple(cfg.MODEL.LOSSES.NAME)
    if not any(n in METRIC_LOSSES for n in names):
        return
    sampler = cfg.DATALOADER.SAMPLER_TRAIN
    k = cfg.DATALOADER.NUM_INSTANCE
    total = cfg.SOLVER.IMS_PER_BATCH
    if sampler not in IDENTITY_SAMPLERS:
        raise ValueError("DATALOADER.SAMPLER_TRAIN is {!r}, but the metric loss in MODEL.LOSSES.NAME {} needs "
                         "P identities × K images per batch: use one of {}".format(sampler, names, IDENTITY_SAMPLERS))
    if k < 2:
        raise ValueError("DATALOADER.NUM_INSTANCE is {}: the metric loss needs K >= 2 images per identity in a "
                         "batch (the paper uses 4)".format(k))
    if total % world_size:
        raise ValueError("SOLVER.IMS_PER_BATCH {} cannot be split evenly over {} processes".format(total, world_size))
    per_process = total // world_size
    if per_process % k:
        raise ValueError("SOLVER.IMS_PER_BATCH {} gives {} images per process, not a multiple of "
                         "DATALOADER.NUM_INSTANCE {}: change one of them (e.g. 64 and 4)".format(total, per_process, k))
    if per_process // k < 2:
        raise ValueError("SOLVER.IMS_PER_BATCH {} over {} process(es) with DATALOADER.NUM_INSTANCE {} gives {} "
                         "identity per batch; the metric loss needs >= 2: raise SOLVER.IMS_PER_BATCH or lower "
                         "DATALOADER.NUM_INSTANCE".format(total, world_size, k, per_process // k))
