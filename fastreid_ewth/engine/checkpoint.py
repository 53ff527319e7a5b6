"""Checkpoints that appear whole or not at all.

fastreid's ``Checkpointer`` opens ``model_XXXX.pth`` (and then ``last_checkpoint``) for writing in place:
a job killed or out of disk space during ``torch.save`` leaves a truncated file under the final name,
and a pointer that may name it; ``--resume`` then fails to load it, and the previous good checkpoint may
already have been overwritten (``model_best.pth``, ``model_final.pth``). ``AtomicCheckpointer`` writes every
file to a temporary name in the same folder, flushes it to disk and renames it into place with
``os.replace``, which is atomic on POSIX and Windows file systems: readers see the old file or the new
one, never a mix. The pointer is written the same way, after the checkpoint it names.
"""
import contextlib
import glob
import logging
import os
import uuid

import torch

from fastreid.utils.checkpoint import Checkpointer

logger = logging.getLogger(__name__)

__all__ = ["AtomicCheckpointer", "atomic_write", "remove_stale_temporaries", "LAST_CHECKPOINT"]

#: the pointer file fastreid's ``--resume`` reads (it holds the basename of the newest checkpoint)
LAST_CHECKPOINT = "last_checkpoint"

# temporary files are hidden and carry this suffix, so that fastreid's ``get_all_checkpoint_files`` (which
# lists ``*.pth``) never sees one and ``remove_stale_temporaries`` can find the ones a kill left behind
_TMP_SUFFIX = ".partial"


def _fsync_folder(folder):
    # the rename is durable only once the folder's entry is on disk; not every platform can open a folder
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Create or replace ``path`` with what ``write(binary_file)`` writes, atomically.

    The data goes to a temporary file next to ``path`` (same file system, so the rename cannot become a
    copy), is flushed and fsync'ed, and is renamed over ``path``. If ``write`` raises, or the process dies,
    ``path`` is untouched; the temporary file is removed (after a kill, by ``remove_stale_temporaries``).
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".{}.{}-{}{}".format(os.path.basename(path), os.getpid(), uuid.uuid4().hex[:8],
                                                   _TMP_SUFFIX))
    f = open(tmp, "xb")  # "x": never write through a file that already exists
    try:
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def remove_stale_temporaries(folder):
    """Delete the temporary files that killed saves left in ``folder``; return their paths.

    Only call this when no other process is saving into ``folder``.
    """
    stale = sorted(glob.glob(os.path.join(glob.escape(folder), ".*" + _TMP_SUFFIX)))
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    if stale:
        logger.info("Removed %d unfinished checkpoint file(s) left by an interrupted save in %s", len(stale), folder)
    return stale


class AtomicCheckpointer(Checkpointer):
    """fastreid's ``Checkpointer`` whose checkpoints and ``last_checkpoint`` pointer are written atomically.

    Loading, resuming and the file layout are fastreid's; only writing differs. ``save`` writes the
    checkpoint, then points ``last_checkpoint`` at it; ``save_snapshot`` writes a checkpoint without
    moving the pointer (for states that ``--resume`` must not pick up).
    """

    @classmethod
    def adopt(cls, checkpointer):
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
