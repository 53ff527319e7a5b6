"""The files this package writes: the names in a run folder, and the one way to write a file atomically.

A run folder (``OUTPUT_DIR``) holds fastreid's files (``log.txt``, ``config.yaml``, ``metrics.json``,
``model_XXXX.pth``, ``model_final.pth``, ``model_best.pth``, the ``last_checkpoint`` pointer) and this
package's (``model_last_good.pth``, the training's ``train.lock``, the runner's ``reproduce_done.json``).
Every module that reads or writes one of them imports its name from here.

``atomic_write`` is the only writer of files that must appear whole or not at all: checkpoints and their
pointer, the runner's markers, plots, the generated SynthReID set's marker, downloaded weights. A job killed
or out of disk space in the middle of a plain ``open(path, "w")`` leaves a truncated file under the final
name; here the data goes to a hidden temporary file in the same folder (same file system, so the rename
cannot turn into a copy), is flushed and fsync'ed, then renamed over ``path`` with ``os.replace``, which is
atomic on POSIX and Windows file systems: readers see the old file or the new one, never a mix.
"""
import contextlib
import glob
import logging
import os
import uuid

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_YAML", "DIAGNOSTICS_PREFIX", "EVAL_ONLY_DIR", "LAST_CHECKPOINT", "LAST_GOOD", "LOG_TXT", "METRICS_JSON",
    "INTERRUPTED", "MODEL_BEST", "MODEL_FINAL", "REPRODUCE_ATTEMPTS", "REPRODUCE_DONE", "REPRODUCE_STDOUT", "TRAIN_LOCK",
    "atomic_write", "remove_stale_temporaries",
]

#: fastreid's pointer file: the basename of the newest checkpoint, read by ``--resume``
LAST_CHECKPOINT = "last_checkpoint"
#: fastreid's checkpoint after the last epoch (``model_final`` + ``.pth``)
MODEL_FINAL = "model_final.pth"
#: fastreid's copy of the checkpoint with the best metric so far (written just before that epoch's own)
MODEL_BEST = "model_best.pth"
#: fastreid's JSON writer: one record per line with the logged scalars
METRICS_JSON = "metrics.json"
#: fastreid's log of the main process (``log.txt.rankN`` on the others)
LOG_TXT = "log.txt"
#: fastreid's copy of the run's merged config
CONFIG_YAML = "config.yaml"
#: this package's snapshot of the last good state when a loss stops being finite (name without ``.pth``)
LAST_GOOD = "model_last_good"
#: this package's checkpoint of a run stopped by a signal, mid-epoch (name without ``.pth``); ``--resume``
#: continues from it at the iteration after the last step
INTERRUPTED = "model_interrupted"
#: the lock a training holds on its OUTPUT_DIR, naming its holder (``reliability.lock``)
TRAIN_LOCK = "train.lock"
#: where an ``--eval-only`` run writes its log and config copy while a training holds its OUTPUT_DIR
EVAL_ONLY_DIR = "eval_only"
#: prefix of the metric-loss diagnostics in fastreid's event storage: ``diag/hinge_active``, ...
DIAGNOSTICS_PREFIX = "diag/"
#: ``tools/reproduce.py``'s marker of a run that trained to the end (exit status 0 and ``model_final.pth``)
REPRODUCE_DONE = "reproduce_done.json"
#: ``tools/reproduce.py``'s log of the run's launches: one JSON record per start and end
REPRODUCE_ATTEMPTS = "reproduce_attempts.jsonl"
#: ``tools/reproduce.py``'s capture of the training process's stdout and stderr
REPRODUCE_STDOUT = "reproduce_stdout.log"

# temporary files are hidden and carry this suffix, so that fastreid's ``get_all_checkpoint_files`` (which
# lists ``*.pth``) never sees one and ``remove_stale_temporaries`` finds the ones a kill left behind
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

    The folder of ``path`` must exist. If ``write`` raises, or the process dies, ``path`` is untouched and
    the temporary file is removed (after a kill, by ``remove_stale_temporaries``). Returns ``path``.
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
    return path


def remove_stale_temporaries(folder):
    """Delete the temporary files that killed writes left in ``folder``; return their paths.

    Only call this when no other process is writing into ``folder``.
    """
    stale = sorted(glob.glob(os.path.join(glob.escape(folder), ".*" + _TMP_SUFFIX)))
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    if stale:
        logger.info("Removed %d unfinished file(s) left by an interrupted write in %s", len(stale), folder)
    return stale
