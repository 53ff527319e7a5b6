"""One training per output folder: a lock on ``OUTPUT_DIR`` held for the whole life of the run.

Two trainings writing into one ``OUTPUT_DIR`` (a second launch of the same command, a ``--resume`` started
while the run still goes on, two jobs of a sweep given the same folder) overwrite each other's checkpoints,
``last_checkpoint``, ``config.yaml`` and ``log.txt``, and nothing says so. ``hold_output_dir`` takes an
exclusive ``fcntl.flock`` on ``OUTPUT_DIR/train.lock`` before anything else is written there and writes the
holder (host, pid, start time, command line) into the file; a second training is refused at once with a
message naming that holder.

flock rather than "the file exists": the kernel drops the lock when the holding process ends however it
ends (SIGKILL, out of memory, a crashed machine), so a dead run never blocks the ``--resume`` that
continues it, and there is no stale-lock rule to get wrong. The file itself is removed when the run ends
normally; a killed run leaves it behind, unlocked and harmless (the next training takes it over).
Processes forked from the holder (data-loader workers) would share its lock and keep it after the holder
was killed; they close their copy when they start, so only the holder has it.

On a network file system the lock is only as good as the file system's locking: on Linux, flock on NFS is
sent to the server as a POSIX lock, so it holds across hosts where the server does locking (NFSv4, NFSv3
with lockd); some file systems (NFS mounted with ``nolock``/``local_lock``, some FUSE and object stores)
lock per host only, or not at all. A file system that refuses to lock gets a warning and the run goes on
unlocked.
"""
import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time

from ..files import TRAIN_LOCK

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

logger = logging.getLogger(__name__)

__all__ = ["OutputDirInUseError", "hold_output_dir", "lock_holder", "process_alive", "release_output_dir"]

# a training retries this long before refusing: a process that only looks at the lock (``lock_holder``, an
# --eval-only run) holds it for a moment
_RETRY_S = 1.0
_BUSY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class OutputDirInUseError(RuntimeError):
    """Another training holds the ``OUTPUT_DIR``; the message names it and what to do."""


class _Lock:
    def __init__(self, path, fd):
        self.path, self.fd = path, fd

    def release(self):
        if self.fd is None:
            return
        # remove the file while still holding the lock, so nobody can lock it in between and then see it go;
        # a process that opened it before is sent to a new file by the inode check in hold_output_dir
        with contextlib.suppress(OSError):
            if _same_file(self.fd, self.path):
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None


_HELD = {}  # realpath of OUTPUT_DIR -> _Lock held by this process


def _close_in_forked_child():
    # a forked child shares the lock (flock belongs to the open file, not the process); closing the child's
    # copy leaves the parent's lock in place, and the child never removes the file
    for lock in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(lock.fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_forked_child)


def _same_file(fd, path):
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _identity():
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}


def _read_holder(path):
    """The holder written into lock file ``path``, or ``{}`` while it is being written / unreadable."""
    for _ in range(5):  # the holder writes its name right after taking the lock
        try:
            with open(path, encoding="utf-8") as f:
                holder = json.loads(f.read() or "null")
            if isinstance(holder, dict):
                return holder
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return {}


def process_alive(pid):
    """Whether process ``pid`` of this machine runs (a zombie does not; a process of another user does)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            # a killed process whose parent died too may linger as a zombie until init reaps it
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    except OSError:
        return False
    return not os.path.isdir("/proc")  # where /proc exists and had no entry, the process is gone


def _alive_here(holder):
    """False when ``holder`` names a process of this host that no longer runs; True otherwise (or unknown)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return True
    return process_alive(holder["pid"])


def _refusal(output_dir, path, holder):
    if holder:
        who = "pid {} on host {}, started {}".format(holder.get("pid", "?"), holder.get("host", "?"),
                                                      holder.get("started", "at an unknown time"))
        if holder.get("command"):
            who += " ({})".format(holder["command"])
        if not _alive_here(holder):
            who += "; that process has ended, but a process it started still holds the lock and releases it " \
                   "when it ends (`fuser {}` names it)".format(path)
    else:
        who = "a process that has not written its name into {} yet".format(path)
    return ("OUTPUT_DIR {} is in use by another training: {}. Two trainings in one folder overwrite each other's "
            "checkpoints, last_checkpoint, config.yaml and log.txt, so this one stops before writing anything. "
            "Use another OUTPUT_DIR, or wait until that training has ended.".format(output_dir, who))


def hold_output_dir(output_dir):
    """Lock ``output_dir`` (created if needed) for this process's training, or raise ``OutputDirInUseError``.

    Re-entrant within a process. The lock lasts until :func:`release_output_dir` or the end of the process.
    Returns ``None`` without locking where the file system cannot lock (after a warning).
    """
    key = os.path.realpath(output_dir)
    if key in _HELD:
        return _HELD[key]
    if fcntl is None:
        logger.warning("OUTPUT_DIR %s is not locked: this platform has no flock; make sure no other training "
                       "writes into it.", output_dir)
        return None
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, TRAIN_LOCK)
    deadline = time.monotonic() + _RETRY_S
    for _ in range(1000):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in _UNSUPPORTED:
                logger.warning("OUTPUT_DIR %s is not locked: its file system cannot lock files (%s); make sure no "
                               "other training writes into it.", output_dir, e.strerror or e)
                return None
            if e.errno not in _BUSY:
                raise
            if time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            raise OutputDirInUseError(_refusal(output_dir, path, _read_holder(path))) from None
        # the holder before us may have removed the file between our open and our lock: we would hold a lock
        # on a file that is no longer there, which nobody else sees; start again on the file there is now
        if not _same_file(fd, path):
            os.close(fd)
            continue
        break
    else:
        raise OutputDirInUseError("OUTPUT_DIR {}: could not take the lock {} (it keeps being replaced by another "
                                  "process)".format(output_dir, path))
    data = json.dumps(_identity()).encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    with contextlib.suppress(OSError):
        os.fsync(fd)
    lock = _HELD[key] = _Lock(path, fd)
    return lock


def release_output_dir(output_dir):
    """Release this process's lock on ``output_dir`` (nothing if it holds none) and remove the lock file."""
    lock = _HELD.pop(os.path.realpath(output_dir), None)
    if lock is not None:
        lock.release()


def lock_holder(output_dir):
    """The holder (``{"host", "pid", "started", "command"}``, possibly empty) of the training that holds
    ``output_dir`` now, or ``None`` when no training holds it. Takes nothing: looks for a moment."""
    if fcntl is None or os.path.realpath(output_dir) in _HELD:
        return None
    path = os.path.join(output_dir, TRAIN_LOCK)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (or no folder): nobody holds it
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return _read_holder(path) if e.errno in _BUSY else None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
