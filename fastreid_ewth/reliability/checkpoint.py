"""Checkpoints that appear whole or not at all.

fastreid's ``Checkpointer`` opens ``model_XXXX.pth`` (and then ``last_checkpoint``) for writing in place:
a job killed or out of disk space during ``torch.save`` leaves a truncated file under the final name,
and a pointer that may name it; ``--resume`` then fails to load it, and the previous good checkpoint may
already have been overwritten (``model_best.pth``, ``model_final.pth``). ``AtomicCheckpointer`` writes every
file with ``files.atomic_write`` (a temporary file in the same folder, flushed and renamed into place):
readers see the old file or the new one, never a mix. The pointer is written the same way, after the
checkpoint it names.
"""
import os

import torch

from fastreid.utils.checkpoint import Checkpointer

from ..files import LAST_CHECKPOINT, atomic_write

__all__ = ["AtomicCheckpointer"]


class AtomicCheckpointer(Checkpointer):
    """fastreid's ``Checkpointer`` whose checkpoints and ``last_checkpoint`` pointer are written atomically.

    Loading, resuming and the file layout are fastreid's; only writing differs. ``save`` writes the
    checkpoint, then points ``last_checkpoint`` at it; ``save_snapshot`` writes a checkpoint without
    moving the pointer (for states that ``--resume`` must not pick up).
    """

    @classmethod
    def from_checkpointer(cls, checkpointer):
        """An ``AtomicCheckpointer`` over the same model, folder and checkpointables as ``checkpointer``."""
        if isinstance(checkpointer, cls):
            return checkpointer
        return cls(checkpointer.model, checkpointer.save_dir, save_to_disk=checkpointer.save_to_disk,
                   **checkpointer.checkpointables)

    def save(self, name, **kwargs):
        """Write ``<save_dir>/<name>.pth`` (model, checkpointables, ``kwargs``) and tag it as the last one."""
        path = self.save_snapshot(name, **kwargs)
        if path is not None:
            self.tag_last_checkpoint(os.path.basename(path))

    def save_snapshot(self, name, **kwargs):
        """Write ``<save_dir>/<name>.pth`` without touching ``last_checkpoint``.

        Returns the path written, or ``None`` on processes that do not write (``save_to_disk`` False: every
        rank but the main one) or without a ``save_dir``.
        """
        if not self.save_dir or not self.save_to_disk:
            return None
        if os.path.basename(name) != name:
            raise ValueError("checkpoint name {!r} must be a plain file name (it is saved in {}), not a "
                             "path".format(name, self.save_dir))
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        path = os.path.join(self.save_dir, "{}.pth".format(name))
        self.logger.info("Saving checkpoint to {}".format(path))
        atomic_write(path, lambda f: torch.save(data, f))
        return path

    def tag_last_checkpoint(self, last_filename_basename):
        atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT),
                     lambda f: f.write(last_filename_basename.encode("utf-8")))
