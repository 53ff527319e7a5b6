"""Checkpoints that appear whole or not at all, and a clear word on every file that is not one.

fastreid's ``Checkpointer`` opens ``model_XXXX.pth`` (and then ``last_checkpoint``) for writing in place:
a job killed or out of disk space during ``torch.save`` leaves a truncated file under the final name,
and a pointer that may name it; ``--resume`` then fails to load it, and the previous good checkpoint may
already have been overwritten (``model_best.pth``, ``model_final.pth``). ``AtomicCheckpointer`` writes every
file with ``files.atomic_write`` (a temporary file in the same folder, flushed and renamed into place):
readers see the old file or the new one, never a mix. The pointer is written the same way, after the
checkpoint it names.

Files still arrive damaged from elsewhere (an interrupted copy, a Git LFS pointer, an HTML error page saved
by a failed download, an older writer). ``describe_checkpoint_problem`` says in words what a file is when
it is not a PyTorch checkpoint, from its first bytes and, for the zip format ``torch.save`` writes, its
end-of-archive record; torch's own errors (``PytorchStreamReader failed reading zip archive``, ``invalid
load key``) name neither the file nor the cause. Every checkpoint this package reads goes through it:
``MODEL.WEIGHTS`` and ``MODEL.BACKBONE.PRETRAIN_PATH`` before a run starts, every load of the checkpointer,
and ``--resume``, which falls back to the newest intact checkpoint (``find_resume_checkpoint``).
"""
import os
import re
import zipfile

import torch

from fastreid.utils.checkpoint import Checkpointer

from .. import compat
from ..files import LAST_CHECKPOINT, MODEL_BEST, MODEL_FINAL, atomic_write

__all__ = ["AtomicCheckpointer", "DamagedCheckpointError", "NoResumeCheckpointError", "check_checkpoint_file",
           "describe_checkpoint_problem", "load_checkpoint"]

# fastreid's ``PeriodicCheckpointer`` names its checkpoints after the epoch: ``model_0004.pth`` after epoch 4
_PERIODIC = re.compile(r"^model_(\d+)\.pth$")

_ZIP_MAGIC = b"PK\x03\x04"
_HEAD_BYTES = 64
_SHOWN_BYTES = 40


class DamagedCheckpointError(ValueError):
    """``path`` is not a loadable PyTorch checkpoint; ``problem`` says what it is instead."""

    def __init__(self, path, problem):
        super().__init__("checkpoint {} {}".format(path, problem))
        self.path, self.problem = path, problem


class NoResumeCheckpointError(RuntimeError):
    """``--resume`` found no intact checkpoint to continue from; the message says how to choose one."""


def _shown(head):
    """The first bytes of a file, as a short one-line Python literal."""
    text = head[:_SHOWN_BYTES]
    try:
        shown = repr(text.decode("utf-8"))
    except UnicodeDecodeError:
        shown = repr(text)
    return shown + ("..." if len(head) > _SHOWN_BYTES else "")


def _as_text(head):
    """``head`` decoded when it looks like the start of a text file, else ``None``."""
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start >= len(head) - 3:  # a multi-byte character cut by the end of the sample
            return head[:e.start].decode("utf-8", "replace")
        return None


def _text_problem(head):
    text = _as_text(head)
    if text is None:
        return None
    lower = text.lstrip().lower()
    if lower.startswith("version https://git-lfs"):
        return ("is a Git LFS pointer, not the checkpoint itself ({}); fetch the file with `git lfs pull` in its "
                "repository".format(_shown(head)))
    if lower.startswith(("<!doctype html", "<html", "<?xml")):
        return "is a web page, not a checkpoint (a failed download?); it starts with {}".format(_shown(head))
    return "looks like a text file, not a PyTorch checkpoint; it starts with {}".format(_shown(head))


def _zip_problem(path, size):
    # torch.save's format is a zip archive; the central directory and end-of-archive record are written
    # last, so a file cut anywhere (a killed write, an interrupted copy or download) has no such record
    if not zipfile.is_zipfile(path):
        return ("is a truncated zip checkpoint ({:,} bytes): the end-of-archive record that torch.save writes "
                "last is missing, so the write or copy was cut off".format(size))
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        return "is a damaged zip archive ({:,} bytes): {}".format(size, e)
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "is a zip archive but not a PyTorch checkpoint (it has no data.pkl; it holds {}{})".format(
            ", ".join(names[:5]), ", ..." if len(names) > 5 else "")
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return ("is a TorchScript archive (written by torch.jit.save or an export), not a checkpoint with a "
                "state dict")
    return None


def _inspect(path, full):
    """``(problem, checkpoint)``: what is wrong with ``path`` (``None`` if nothing) and, when it was loaded,
    its content. Cheap checks first; the whole file is loaded only with ``full`` or when the cheap checks
    cannot tell (the legacy pickle format of torch < 1.6 and anything unrecognised)."""
    if os.path.islink(path) and not os.path.exists(path):
        return "is a broken symbolic link (to {!r})".format(os.readlink(path)), None
    if not os.path.exists(path):
        return "does not exist", None
    if os.path.isdir(path):
        inside = [n for n in (MODEL_FINAL, MODEL_BEST) if os.path.isfile(os.path.join(path, n))]
        hint = ": pass a file in it, e.g. {}".format(os.path.join(path, inside[0])) if inside else ""
        return "is a directory, not a checkpoint file{}".format(hint), None
    if not os.path.isfile(path):
        return "is not a regular file (a device, pipe or socket)", None
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError as e:
        return "cannot be read ({})".format(e.strerror or e), None
    if size == 0:
        return "is empty (0 bytes): the write or copy that made it never got to the data", None
    if head.startswith(_ZIP_MAGIC):
        problem = _zip_problem(path, size)
        if problem is not None or not full:
            return problem, None
    elif len(head) > 10 and head[8:10] == b'{"':
        # safetensors: an 8-byte header length, then a JSON header
        return ("is a safetensors file; fastreid reads files written by torch.save (convert it with "
                "safetensors.torch.load_file + torch.save)"), None
    else:
        text = _text_problem(head)
        if text is not None:
            return text, None
        # binary and not zip: the legacy pickle format, or something else; only loading it tells
    try:
        checkpoint = compat.load_checkpoint_file(path)
    except MemoryError:
        raise
    except Exception as e:  # whatever torch or pickle raise, the cause for the user is the file
        if head.startswith(_ZIP_MAGIC):
            kind = "a complete zip checkpoint ({:,} bytes) whose content is damaged".format(size)
        elif head[:1] == b"\x80":
            kind = "a legacy-format (pickle) file"
        else:
            kind = "a {:,}-byte binary file".format(size)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return "is {} that cannot be loaded ({}: {})".format(kind, type(e).__name__, first), None
    return None, checkpoint


def describe_checkpoint_problem(path, full=False):
    """What is wrong with ``path`` as a PyTorch checkpoint, as the end of a sentence naming it, or ``None``.

    E.g. ``"is empty (0 bytes): ..."``, ``"looks like a text file, ...; it starts with 'version ...'"``,
    ``"is a truncated zip checkpoint (1,234 bytes): ..."``. Looks at the file's first bytes and, for the
    zip format ``torch.save`` writes, its directory; loads the whole file only with ``full`` or when nothing
    cheaper can tell (the legacy pickle format).
    """
    return _inspect(os.fspath(path), full)[0]


def load_checkpoint(path):
    """The content of checkpoint ``path`` (on the CPU); ``DamagedCheckpointError`` saying what the file is
    when it cannot be loaded."""
    problem, checkpoint = _inspect(os.fspath(path), full=True)
    if problem is not None:
        raise DamagedCheckpointError(path, problem)
    return checkpoint


def check_checkpoint_file(path, key, fix):
    """Raise when ``path`` (the value of config key ``key``) is not a PyTorch checkpoint.

    ``FileNotFoundError`` when it does not exist, ``ValueError`` otherwise; the message names the key, the
    file, what was found and ``fix`` (what to pass instead). Cheap checks only (see
    :func:`describe_checkpoint_problem`).
    """
    problem = describe_checkpoint_problem(path)
    if problem is None:
        return
    error = FileNotFoundError if problem == "does not exist" else ValueError
    raise error("{} {!r} {}. {}".format(key, path, problem, fix))


class AtomicCheckpointer(Checkpointer):
    """fastreid's ``Checkpointer`` whose checkpoints and ``last_checkpoint`` pointer are written atomically.

    Resuming and the file layout are fastreid's; writing differs, and loading names the file and what is
    wrong with it when it is not a checkpoint (``DamagedCheckpointError``). ``save`` writes the checkpoint,
    then points ``last_checkpoint`` at it; ``save_snapshot`` writes a checkpoint without moving the pointer
    (for states that ``--resume`` must not pick up). ``find_resume_checkpoint`` chooses what ``--resume``
    loads when the pointer names a damaged or missing file.
    """

    _verified = None  # (path, checkpoint) that find_resume_checkpoint loaded, handed to the next load of it

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

    def _load_file(self, f):
        verified, self._verified = self._verified, None
        if verified is not None and verified[0] == f:
            return verified[1]
        return load_checkpoint(f)

    # ------------------------------------------------------------------------------------------------
    # what --resume continues from
    # ------------------------------------------------------------------------------------------------
    def find_resume_checkpoint(self, iters_per_epoch=None, max_epoch=None):
        """The checkpoint ``--resume`` continues from -> ``(path, warning)``; ``warning`` is ``None`` when it
        is the one ``last_checkpoint`` names.

        When ``last_checkpoint`` names a file that is missing or cannot be loaded, the newest intact resume
        point of ``save_dir`` is taken instead, by the epoch stored in it: the periodic checkpoints
        ``model_NNNN.pth`` and ``model_final.pth`` (the run's timeline), and ``model_best.pth`` only when it
        is newer than all of them (it is a copy of the periodic checkpoint of its epoch, so then it holds the
        newest state there is). ``model_last_good.pth`` (the state before a non-finite loss, mid-epoch) and
        any other ``*.pth`` are never taken. The warning says which file was damaged, which one is loaded
        and how many epochs and iterations are trained again (``iters_per_epoch``; ``max_epoch`` gives the
        epoch of a damaged ``model_final.pth``). Raises ``NoResumeCheckpointError`` saying how to choose a
        checkpoint when there is none. The chosen file is loaded once here and handed to the next ``load``.
        """
        folder = self.save_dir
        pointer = os.path.join(folder, LAST_CHECKPOINT)
        try:
            with open(pointer, encoding="utf-8", errors="replace") as f:
                name = f.read().strip()
        except OSError as e:
            name, named, problem = "", pointer, "cannot be read ({})".format(e.strerror or e)
        else:
            named = os.path.join(folder, name)
            problem = "is empty (it should hold a checkpoint's file name)" if not name else None
        if problem is None:
            problem, checkpoint = _inspect(named, full=True)
            if problem is None:
                self._verified = (named, checkpoint)
                return named, None
            broken = "{} names {}, which {}".format(pointer, named, problem)
        else:
            broken = "{} {}".format(pointer, problem)

        chosen, others = self._newest_intact(exclude=os.path.basename(named) if name else None)
        if chosen is None:
            tried = "; ".join("{} {}".format(n, p) for n, p in others) or "there is no other model_*.pth there"
            raise NoResumeCheckpointError(
                "--resume cannot continue the run in {folder}: {broken}, and no other checkpoint there can be "
                "resumed from ({tried}). Choose what to start from: write the file name of an intact checkpoint "
                "of that folder into {pointer} and run with --resume again; or start from the weights of a "
                "checkpoint with `MODEL.WEIGHTS <file>` without --resume (the model only, training from epoch 0); "
                "or delete {pointer} to train from scratch.".format(
                    folder=folder, broken=broken, tried=tried, pointer=pointer))
        path, epoch, checkpoint = chosen
        self._verified = (path, checkpoint)
        repeated = self._repeated_work(os.path.basename(named) if name else "", epoch, iters_per_epoch, max_epoch)
        skipped = "".join("; {} also {}".format(n, p) for n, p in others)
        warning = ("--resume: {broken}{skipped}. Resuming from {path} instead, the newest intact checkpoint (written "
                   "after epoch {epoch}): {repeated}. The damaged file is replaced when the run saves that "
                   "checkpoint again.".format(broken=broken, skipped=skipped, path=path, epoch=epoch,
                                              repeated=repeated))
        return path, warning

    def _newest_intact(self, exclude):
        """``((path, epoch, checkpoint) or None, [(file name, problem)])``: the newest intact resume point."""
        folder = self.save_dir
        files = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        periodic = sorted((int(m.group(1)), n) for n in files for m in [_PERIODIC.match(n)] if m and n != exclude)
        problems, best = [], None

        def consider(name, rank):
            nonlocal best
            path = os.path.join(folder, name)
            problem, checkpoint = _inspect(path, full=True)
            if problem is None and not (isinstance(checkpoint, dict) and "model" in checkpoint
                                        and isinstance(checkpoint.get("epoch"), int)):
                problem = "holds no model and epoch (not written by a training's checkpointer)"
            if problem is not None:
                problems.append((name, problem))
                return False
            key = (checkpoint["epoch"], rank)  # at the same epoch, a periodic checkpoint before model_best
            if best is None or key > best[0]:
                best = (key, path, checkpoint)
            return True

        for _, name in reversed(periodic):  # newest first; the first intact one is the newest of them
            if consider(name, 1):
                break
        for name, rank in ((MODEL_FINAL, 1), (MODEL_BEST, 0)):
            if name in files and name != exclude:
                consider(name, rank)
        if best is None:
            return None, problems
        (epoch, _), path, checkpoint = best
        return (path, epoch, checkpoint), problems

    @staticmethod
    def _repeated_work(damaged_name, epoch, iters_per_epoch, max_epoch):
        """In words: the epochs (and iterations) between checkpoint ``epoch`` and the damaged file's."""
        match = _PERIODIC.match(damaged_name)
        if match:
            damaged = int(match.group(1))
        elif damaged_name == MODEL_FINAL and max_epoch:
            damaged = int(max_epoch) - 1
        else:
            return "training continues at epoch {}; the epochs the damaged file held after it are trained " \
                   "again".format(epoch + 1)
        count = damaged - epoch
        if count <= 0:
            return "nothing is trained again (it holds epoch {} too)".format(epoch)
        epochs = "epoch {}".format(epoch + 1) if count == 1 else "epochs {}-{}".format(epoch + 1, damaged)
        iterations = " ({} iterations)".format(count * iters_per_epoch) if iters_per_epoch else ""
        return "{}{} {} trained again".format(epochs, iterations, "is" if count == 1 else "are")
