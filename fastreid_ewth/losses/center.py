"""Center loss (Wen et al. 2016) as used by AGW: squared distance of each feature to its class center."""
import torch

__all__ = ["center_loss"]


def center_loss(features, targets, centers):
    """Mean over the batch of ``||f_i - c_{y_i}||^2``.

    Args:
        features: N×D features (the pre-BNNeck embedding in AGW).
        targets: N integer labels in ``[0, C)``.
        centers: C×D class centers (a parameter, not detached: the centers learn from this loss).
    Returns:
        scalar tensor.
    """
    if features.dim() != 2 or centers.dim() != 2 or features.size(1) != centers.size(1):
        raise ValueError("center_loss: features {} and centers {} must be N×D and C×D with the same D".format(
            tuple(features.shape), tuple(centers.shape)))
    if targets.numel() != features.size(0):
        raise ValueError("center_loss: {} targets for {} features".format(targets.numel(), features.size(0)))
    if targets.numel() and (targets.min() < 0 or targets.max() >= centers.size(0)):
        raise ValueError("center_loss: labels must lie in [0, {}), got [{}, {}]".format(
            centers.size(0), int(targets.min()), int(targets.max())))
    diff = features - centers[targets]
    # the same clamp as ReID-Survey's implementation keeps the loss finite in half precision
    return diff.pow(2).sum(dim=1).clamp(min=1e-12, max=1e12).mean()
