"""Whether autocast (AMP) is on, on every torch this package supports, and a way to step out of it.

``torch.is_autocast_enabled(device_type)`` takes its device argument only from torch 2.4 on; before,
it answered for CUDA only and took no argument, and the CPU had its own query. Every module in
:mod:`fastreid_ewth.losses` asks through :func:`autocast_enabled`, never torch directly.
"""
import contextlib

import torch

__all__ = ["autocast_enabled", "autocast_disabled"]


def autocast_enabled(device_type):
    """True when autocast is active for ``device_type`` (``"cpu"``, ``"cuda"``, ...)."""
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # torch < 2.4: no device argument, a separate query for the CPU
        if device_type == "cpu":
            return bool(torch.is_autocast_cpu_enabled())
        return bool(torch.is_autocast_enabled())


def autocast_disabled(device_type):
    """A context in which ``device_type`` computes in the inputs' own precision.

    Leaves the autocast state untouched (a no-op context) when autocast is not on.
    """
    if autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
