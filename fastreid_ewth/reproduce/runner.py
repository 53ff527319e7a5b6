"""Run a set of (config, dataset[, seed]) trainings, one ``OUTPUT_DIR`` each, so that a stopped reproduction
can be started again without losing or repeating work.

Each training is a process of its own, ``<this python> -m fastreid_ewth.train --config-file ...`` (the
installed package's training command; ``tools/train_net.py`` in a checkout is the same), so the runner
needs no checkout: only the config files it is given.

State of a run, read from its folder (:func:`run_state`):

- ``finished``: the runner's marker ``reproduce_done.json`` (written after the training process exited
  with 0) and ``model_final.pth`` are there -> skipped.
- ``unmarked``: ``model_final.pth`` but no marker: trained to the end by someone else (e.g. the
  ``--dry-run`` commands on a cluster) -> adopted (a marker without wall time is written) and skipped.
- ``running``: its last launch (by this runner, on this machine) is still training -> left alone, so that a
  second runner or a ``--report-only`` during training neither relaunches nor misreports it.
- ``interrupted``: a ``last_checkpoint`` but no marker -> relaunched with ``--resume``; fastreid's
  checkpointer restores model, optimizer, scheduler and epoch from it.
- ``fresh``: nothing of the above -> launched from the start.

Each launch is appended to ``reproduce_attempts.jsonl`` in the run folder (start, end, exit code), so the
wall time in the marker adds up all attempts, including ones killed without a chance to say so (their
end is taken as the last time the run wrote to its folder). A start names the training's pid, the pid of
the process that launched it (``launcher_pid``: the runner, or a SLURM job's process) and, inside a
submitit job, the job's id (``job_id``).
"""
import datetime
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import NamedTuple, Optional, Tuple

from ..files import (LAST_CHECKPOINT, LOG_TXT, METRICS_JSON, MODEL_FINAL, REPRODUCE_ATTEMPTS, REPRODUCE_DONE,
                     REPRODUCE_STDOUT, atomic_write)
from ..reliability.lock import process_alive

__all__ = ["RunSpec", "MARKER", "ATTEMPTS", "TRAIN_MODULE", "run_state", "train_command", "train_run",
           "read_marker", "visible_gpus", "FORBIDDEN_OPTS"]

MARKER = REPRODUCE_DONE
ATTEMPTS = REPRODUCE_ATTEMPTS
STDOUT = REPRODUCE_STDOUT

#: The training command, run as ``python -m TRAIN_MODULE``.
TRAIN_MODULE = "fastreid_ewth.train"

#: Keys the runner sets itself; an override in ``--opts`` would send runs to the wrong folder or dataset.
FORBIDDEN_OPTS = ("OUTPUT_DIR", "DATASETS.NAMES", "DATASETS.TESTS")


class RunSpec(NamedTuple):
    """One training run."""

    name: str  # row label in the report, e.g. "BoT_TH"
    config_file: str
    dataset: str  # fastreid dataset name, used for DATASETS.NAMES and DATASETS.TESTS
    output_dir: str
    opts: Tuple[str, ...] = ()  # KEY VALUE overrides, after the runner's own
    seed: Optional[int] = None  # SEED override; None keeps the config's

    @property
    def label(self):
        return "{} {}{}".format(self.dataset, self.name, "" if self.seed is None else " seed {}".format(self.seed))


def run_state(output_dir):
    """``finished``, ``unmarked``, ``running``, ``interrupted`` or ``fresh`` (see the module docstring)."""
    final = os.path.isfile(os.path.join(output_dir, MODEL_FINAL))
    if final and os.path.isfile(os.path.join(output_dir, MARKER)):
        return "finished"
    if _running(output_dir):
        return "running"
    if final:
        return "unmarked"
    if os.path.isfile(os.path.join(output_dir, LAST_CHECKPOINT)):
        return "interrupted"
    return "fresh"


def _running(output_dir):
    """Whether the last recorded launch has not ended and its process is alive on this machine."""
    attempts = _read_attempts(output_dir)
    if not attempts or attempts[-1].get("event") != "start":
        return False
    start = attempts[-1]
    return start.get("host") == socket.gethostname() and process_alive(start.get("pid"))


def train_command(spec, num_gpus=1, resume=False, python=None):
    """The training command line of ``spec``, ``python -m fastreid_ewth.train ...`` -> list of str.

    ``python`` defaults to this interpreter, so the training imports the same installed packages.
    """
    dataset = '("{}",)'.format(spec.dataset)
    cmd = [python or sys.executable, "-m", TRAIN_MODULE, "--config-file", spec.config_file]
    if num_gpus != 1:
        cmd += ["--num-gpus", str(num_gpus)]
    if resume:
        cmd.append("--resume")
    cmd += ["DATASETS.NAMES", dataset, "DATASETS.TESTS", dataset, "OUTPUT_DIR", spec.output_dir]
    cmd += list(spec.opts)
    if spec.seed is not None:
        cmd += ["SEED", str(spec.seed)]
    return cmd


def format_command(cmd):
    return " ".join(shlex.quote(c) for c in cmd)


def read_marker(output_dir):
    """The marker's content (dict), or ``None`` without a readable marker."""
    try:
        with open(os.path.join(output_dir, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _read_attempts(output_dir):
    path = os.path.join(output_dir, ATTEMPTS)
    if not os.path.isfile(path):
        return []
    attempts = []
    with open(path) as f:
        for line in f:
            try:
                attempts.append(json.loads(line))
            except ValueError:  # a line torn by a kill
                continue
    return attempts


def _append_attempt(output_dir, record):
    with open(os.path.join(output_dir, ATTEMPTS), "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _last_write(output_dir):
    """When the run last wrote anything its trainer writes (epoch seconds), or ``None``."""
    times = [os.path.getmtime(os.path.join(output_dir, name))
             for name in (LOG_TXT, METRICS_JSON, LAST_CHECKPOINT, STDOUT)
             if os.path.isfile(os.path.join(output_dir, name))]
    return max(times) if times else None


def _attempt_seconds(attempts):
    """Total wall time of the recorded attempts; an attempt that never recorded its end counts up to
    its ``last_write`` (filled in by the next launch), or not at all when that is unknown."""
    starts = {}
    total = 0.0
    for record in attempts:
        if record.get("event") == "start":
            starts[record["attempt"]] = record["time"]
        elif record.get("event") in ("end", "lost") and record.get("attempt") in starts:
            end = record.get("time")
            if end is not None:
                total += max(0.0, end - starts[record["attempt"]])
    return total


def _close_lost_attempts(output_dir, attempts):
    """Record the end of attempts that were killed before they could (their last write)."""
    ended = {r.get("attempt") for r in attempts if r.get("event") in ("end", "lost")}
    for record in attempts:
        if record.get("event") == "start" and record["attempt"] not in ended:
            last = _last_write(output_dir)
            end = {"event": "lost", "attempt": record["attempt"],
                   "time": last if last is not None and last >= record["time"] else None}
            _append_attempt(output_dir, end)
            attempts.append(end)


def _write_marker(spec, output_dir, command, attempts, wall_time):
    marker = {
        "name": spec.name,
        "config_file": spec.config_file,
        "dataset": spec.dataset,
        "seed": spec.seed,
        "opts": list(spec.opts),
        "command": command,
        "attempts": sum(1 for r in attempts if r.get("event") == "start"),
        "resumed": any(r.get("event") == "start" and r.get("resume") for r in attempts),
        "wall_time_s": wall_time,
        "finished_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    text = json.dumps(marker, indent=2, sort_keys=True) + "\n"
    # never a half-written marker: a torn one would read as "no marker" but look finished to a person
    atomic_write(os.path.join(output_dir, MARKER), lambda f: f.write(text.encode("utf-8")))
    return marker


def mark_finished(spec):
    """Mark a run trained to the end without this runner (state ``unmarked``) as finished."""
    attempts = _read_attempts(spec.output_dir)
    wall = _attempt_seconds(attempts) if attempts else None
    return _write_marker(spec, spec.output_dir, None, attempts, wall or None)


def _submitit_job_id():
    """The id of the submitit job this process runs in (SLURM's, or the local executor's), else ``None``."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except Exception:  # not inside a job after all, or submitit gone: the record just lacks the id
        return None


def _end_child(proc, timeout):
    """Make sure the training process ``proc`` has ended, leaving it ``timeout`` seconds to stop by itself
    after a stop signal (it checkpoints and exits with 75; a second signal is ignored) -> its exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except OSError:
            pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def train_run(spec, num_gpus=1, verbose=False, env=None, python=None, echo=print, on_start=None, stop_timeout=30):
    """Train ``spec`` to the end (fresh or resumed by its state), then write its marker.

    The training process's stdout/stderr go to ``<OUTPUT_DIR>/reproduce_stdout.log`` (``verbose``: to
    this process's). Returns ``(state_before, exit_code)``; the marker is written only on exit code 0
    with a ``model_final.pth``. ``on_start(proc)`` is called with the training's ``subprocess.Popen`` once it
    runs (a SLURM job forwards its time-limit signal to it). Left by an exception (Ctrl-C, a job being
    requeued), the training gets SIGTERM unless it has ended, ``stop_timeout`` seconds to write its checkpoint
    and exit, then SIGKILL; its end is recorded with its exit code and the exception propagates.
    """
    state = run_state(spec.output_dir)
    if state in ("finished", "running"):
        return state, 0
    if state == "unmarked":
        mark_finished(spec)
        return state, 0
    os.makedirs(spec.output_dir, exist_ok=True)
    resume = state == "interrupted"
    cmd = train_command(spec, num_gpus=num_gpus, resume=resume, python=python)
    attempts = _read_attempts(spec.output_dir)
    _close_lost_attempts(spec.output_dir, attempts)
    number = 1 + sum(1 for r in attempts if r.get("event") == "start")
    echo("  {} {}".format("resume" if resume else "start ", format_command(cmd)))
    if not verbose:
        echo("         follow it with: tail -f {}".format(shlex.quote(os.path.join(spec.output_dir, LOG_TXT))))

    out = None if verbose else open(os.path.join(spec.output_dir, STDOUT), "a")
    try:
        started = time.time()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, env=env)
        recorded = False
        try:
            start = {"event": "start", "attempt": number, "time": started, "resume": resume, "command": cmd,
                     "pid": proc.pid, "launcher_pid": os.getpid(), "host": socket.gethostname()}
            job_id = _submitit_job_id()
            if job_id is not None:
                start["job_id"] = job_id
            _append_attempt(spec.output_dir, start)
            recorded = True
            attempts.append(start)
            if on_start is not None:
                on_start(proc)
            code = proc.wait()
        except BaseException as error:  # Ctrl-C reaches the child too; a requeued job has stopped it already
            code = _end_child(proc, stop_timeout)
            if recorded:
                _append_attempt(spec.output_dir, {"event": "end", "attempt": number, "time": time.time(),
                                                  "exit_code": code, "left_by": type(error).__name__})
            raise
    finally:
        if out is not None:
            out.close()
    end = {"event": "end", "attempt": number, "time": time.time(), "exit_code": code}
    _append_attempt(spec.output_dir, end)
    attempts.append(end)
    if code == 0 and not os.path.isfile(os.path.join(spec.output_dir, MODEL_FINAL)):
        echo("  {} exited with 0 but wrote no {}: not marked as finished".format(spec.label, MODEL_FINAL))
        return state, 1
    if code == 0:
        _write_marker(spec, spec.output_dir, cmd, attempts, _attempt_seconds(attempts))
    return state, code


def last_attempt(output_dir):
    """The last record of the run's attempts journal (a dict), or ``None``."""
    attempts = _read_attempts(output_dir)
    return attempts[-1] if attempts else None


def visible_gpus(env=None):
    """The GPUs this process may hand out, as ``CUDA_VISIBLE_DEVICES`` entries (list of str): the entries of
    ``env``'s (default: this process's) ``CUDA_VISIBLE_DEVICES`` when set, else ``0 .. torch.cuda.device_count()-1``.
    """
    env = os.environ if env is None else env
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        devices = []
        for entry in (e.strip() for e in listed.split(",")):
            if not entry or entry.startswith("-"):  # CUDA stops at the first invalid entry ("-1": none)
                break
            devices.append(entry)
        return devices
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def stdout_tail(spec, lines=25):
    """Last ``lines`` lines of the training process's captured output (for error messages)."""
    path = os.path.join(spec.output_dir, STDOUT)
    if not os.path.isfile(path):
        return ""
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])
