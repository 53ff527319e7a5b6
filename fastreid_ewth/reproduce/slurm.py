"""``tools/reproduce.py --launcher slurm``: every unfinished run as one SLURM job, submitted through submitit.

One invocation (:func:`main`):

1. reads every run's state from its folder (``runner.run_state``: the marker, ``last_checkpoint``) and, for a
   run submitted before, from the scheduler: ``submitit.SlurmJob(folder, job_id).state`` (sacct; squeue where
   sacct has no record of the job), or for submitit's local executor whether the job's controller process
   still runs on this machine;
2. submits the runs that need a job: never submitted, or their last job ended without finishing them. Each
   submission is appended to the journal ``<output>/slurm_jobs.jsonl`` (:data:`JOURNAL`). Finished runs and
   runs whose job is queued or running are left alone, so running the command again submits nothing twice;
3. writes the report of what has finished (``cli.make_report``) and exits without waiting (``--wait``: after
   every job has ended, exit status 1 unless every run finished).

A job runs :class:`TrainingJob`, which trains its run with ``runner.train_run`` (fresh, or ``--resume`` from
the folder's checkpoint). SLURM warns the job ``--signal-delay`` seconds before its time limit with SIGUSR2
(submitit's ``--signal=USR2@delay``); submitit's handler calls :meth:`TrainingJob.checkpoint`, which forwards
the signal to the training and waits for it to exit: the training finishes its step, writes
``model_interrupted.pth``, points ``last_checkpoint`` at it and exits with ``EXIT_INTERRUPTED`` (75).
``checkpoint`` then hands the job back to submitit, which requeues it; the restarted job finds the run
``interrupted`` and resumes it. A pre-emption signals the training itself (SIGTERM): it checkpoints the same
way, and the run resumes in the job SLURM requeues, or in the one the next invocation submits.

Journal records, one JSON object a line, the last one of a run folder counting::

    {"event": "submitted", "label": "Market1501 BoT_TH", "output_dir": "/abs/logs/reproduce/Market1501/BoT_TH",
     "job_id": "4242", "executor": "slurm", "host": "login1", "submitit_folder": "/abs/logs/reproduce/submitit/%j",
     "log": "/abs/logs/reproduce/submitit/4242/4242_0_log.err", "time": 1760000000.0,
     "submitted_at": "2025-10-09T10:13:20+02:00", "resume": false, "gpus": 1}

With the local executor ``job_id`` is the pid of submitit's controller process on ``host``.
"""
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import NamedTuple, Optional

from ..reliability.lock import process_alive
from ..reliability.preempt import EXIT_INTERRUPTED
from . import runner

try:  # the job class must derive from submitit's at definition; submitit itself is checked by require_submitit
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:
    _Checkpointable = object

__all__ = ["JOURNAL", "TrainingJob", "JobFailed", "main", "parse_time", "parse_sbatch", "plugin_problem",
           "read_journal", "require_submitit"]

#: The journal of submitted jobs, in the output folder.
JOURNAL = "slurm_jobs.jsonl"
INSTALL = "pip install 'fastreid_ewth[slurm]' (or: pip install submitit)"

# SLURM job states (sacct / squeue) by what they mean for the run; any other state has ended the job
_PENDING = frozenset(("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT",
                      "CONFIGURING"))
_RUNNING = frozenset(("RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"))
# sbatch options that have an option of their own here (an --sbatch override would leave submitit unaware)
_OWN_SBATCH = {"time": "--time", "partition": "--partition", "account": "--account",
               "cpus-per-task": "--cpus-per-job", "gpus-per-node": "--gpus-per-job", "signal": "--signal-delay",
               "job-name": None, "output": "--submitit-dir", "error": "--submitit-dir"}
_POLL_S = {"slurm": 60.0, "local": 1.0}


def _fail(message):
    raise SystemExit("reproduce.py: error: " + message)


def plugin_problem():
    """Why submitit cannot tell a job where it runs (its plugin discovery fails), or ``None``.

    Every job starts with that discovery, so such a submitit would submit jobs that all fail at once:
    submitit 1.5.4 on Python < 3.10 raises ``KeyError: 'submitit'`` there.
    """
    try:
        from submitit.core import plugins

        plugins.get_executors()
        plugins.get_job_environments()
    except Exception as error:
        return "{}: {}".format(type(error).__name__, error)
    return None


def require_submitit():
    """The ``submitit`` module, or exit saying how to install one that works here."""
    try:
        import submitit
    except ImportError as error:
        _fail("--launcher slurm submits the runs through submitit, which is not installed here ({}). "
              "Install it: {}".format(error, INSTALL))
    problem = plugin_problem()
    if problem:
        _fail("submitit {} does not work with this Python ({}): finding its job environments fails with {}, so "
              "every job would fail the same way as it starts. submitit 1.5.4 has this bug on Python < 3.10: "
              "pip install 'submitit>=1.5,<2,!=1.5.4' (what {} installs here)".format(
                  getattr(submitit, "__version__", "?"), sys.version.split()[0], problem,
                  "pip install 'fastreid_ewth[slurm]'"))
    return submitit


# --------------------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------------------
def parse_time(text):
    """A SLURM time limit -> whole minutes (seconds rounded up): ``90`` (minutes), ``H:MM:SS``, ``D-H:MM:SS``."""
    value = str(text).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})", value)
    if re.fullmatch(r"\d+", value):
        minutes = int(value)
    elif match:
        days, hours, mins, secs = (int(g or 0) for g in match.groups())
        if mins > 59 or secs > 59:
            _fail("--time {!r}: minutes and seconds go up to 59. Example: --time 24:00:00".format(text))
        minutes = (days * 24 + hours) * 60 + mins + (1 if secs else 0)
    elif re.fullmatch(r"\d+:\d{1,2}", value):
        _fail("--time {!r} is ambiguous (SLURM reads it as minutes:seconds): write hours as H:MM:SS "
              "(--time {}:00) or minutes (--time 90)".format(text, value))
    else:
        _fail("--time {!r} is not a time limit: give minutes (--time 90), H:MM:SS (--time 24:00:00) or "
              "D-H:MM:SS (--time 2-00:00:00)".format(text))
    if minutes < 1:
        _fail("--time {!r}: the time limit must be at least a minute".format(text))
    return minutes


def parse_sbatch(items):
    """``--sbatch KEY=VALUE`` items -> dict for submitit's ``additional_parameters``."""
    params = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip().lstrip("-")
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key) or not value.strip():
            _fail("--sbatch takes KEY=VALUE, an sbatch option without its dashes and its value, e.g. "
                  "--sbatch mem=64G or --sbatch constraint=a100; got {!r}".format(item))
        own = key.replace("_", "-")
        if own in _OWN_SBATCH:
            _fail("--sbatch {}: {}".format(item, "use {} instead, which submitit needs to know too".format(
                _OWN_SBATCH[own]) if _OWN_SBATCH[own] else "the runner names each job itself"))
        params[key] = value.strip()
    return params


def stop_wait(signal_delay):
    """How long a job waits for its training to checkpoint and exit after forwarding the signal: the
    signal's lead time less a margin for requeueing."""
    return max(signal_delay / 2.0, signal_delay - 15.0)


class Options(NamedTuple):
    executor: str  # "slurm" or "local" (submitit's LocalExecutor)
    time_min: Optional[int]
    partition: Optional[str]
    account: Optional[str]
    cpus: Optional[int]
    sbatch: dict
    signal_delay: int
    max_timeouts: int
    folder: str  # submitit's folder; each job's files in folder/<job id>
    gpus: int
    wait: bool
    resubmit_unknown: bool


def options(args, output, gpus):
    """The ``--launcher slurm`` options of ``args``, checked -> :class:`Options`."""
    from .cli import DEFAULT_MAX_TIMEOUTS, DEFAULT_SIGNAL_DELAY

    time_min = None if args.time is None else parse_time(args.time)
    signal_delay = DEFAULT_SIGNAL_DELAY if args.signal_delay is None else args.signal_delay
    if signal_delay < 1:
        _fail("--signal-delay must be at least 1 second, got {}".format(signal_delay))
    if time_min is not None and signal_delay >= time_min * 60:
        _fail("--signal-delay {} s is not shorter than --time {} ({} s): the warning would come before the job "
              "could train. Lower --signal-delay or raise --time".format(signal_delay, args.time, time_min * 60))
    if args.cpus_per_job is not None and args.cpus_per_job < 1:
        _fail("--cpus-per-job must be >= 1, got {}".format(args.cpus_per_job))
    max_timeouts = DEFAULT_MAX_TIMEOUTS if args.max_timeouts is None else args.max_timeouts
    if max_timeouts < 0:
        _fail("--max-timeouts must be >= 0, got {}".format(max_timeouts))
    folder = os.path.abspath(args.submitit_dir or os.path.join(output, "submitit"))
    return Options(args.submitit_executor or "slurm", time_min, args.partition, args.account, args.cpus_per_job,
                   parse_sbatch(args.sbatch), signal_delay, max_timeouts, folder, gpus, args.wait,
                   args.resubmit_unknown)


# --------------------------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------------------------
class JobFailed(RuntimeError):
    """A job's training did not finish its run; the message has the tail of the training's output."""


def _say(message):
    print(message, flush=True)


class TrainingJob(_Checkpointable):
    """What a job runs: train one run (``runner.train_run``) in the folder the command was run from.

    ``checkpoint`` is called by submitit's signal handler, in the job's process, while ``__call__`` waits for
    the training: it forwards the signal, waits at most ``stop_timeout`` seconds for the training to exit (it
    writes its checkpoint first; killed after that), and returns the job itself for submitit to requeue.
    """

    def __init__(self, spec, num_gpus=1, python=None, cwd=None, stop_timeout=75.0, verbose=False):
        self.spec = spec
        self.num_gpus = num_gpus
        self.python = python  # the trainings' interpreter; None: the job's own
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.verbose = verbose
        self._proc = None  # the training process while it runs

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_proc"] = None  # a process does not travel with the requeued job
        return state

    def _started(self, proc):
        self._proc = proc

    def __call__(self):
        if self.cwd:
            os.chdir(self.cwd)  # the run's paths are relative to where the command was run
        spec = self.spec
        self._proc = None
        try:
            state, code = runner.train_run(spec, num_gpus=self.num_gpus, verbose=self.verbose, python=self.python,
                                           echo=_say, on_start=self._started, stop_timeout=self.stop_timeout)
        finally:
            self._proc = None
        if state == "running":
            raise JobFailed("{}: another process on this machine trains this run folder ({}); this job leaves it "
                            "alone".format(spec.label, spec.output_dir))
        if code == 0:
            _say("{}: finished".format(spec.label))
            return {"label": spec.label, "output_dir": spec.output_dir, "state_before": state}
        tail = runner.stdout_tail(spec)
        if code == EXIT_INTERRUPTED:
            raise JobFailed("{}: the training was stopped by a signal that did not come through this job (exit "
                            "status {}, e.g. a pre-emption's SIGTERM or scancel) and wrote its checkpoint; SLURM "
                            "may requeue the job, else the next tools/reproduce.py resubmits it and it resumes. "
                            "Last lines of its output:\n{}".format(spec.label, code, tail))
        raise JobFailed("{}: the training exited with {}; last lines of its output ({}):\n{}".format(
            spec.label, code, os.path.join(spec.output_dir, runner.STDOUT), tail))

    def checkpoint(self, *args, **kwargs):
        # In a signal handler, while __call__ is inside proc.wait(): that Popen's lock is held, so never wait()
        # on it here; poll whether the process still runs (an exited, unreaped child is a zombie: ended).
        proc = self._proc
        if proc is not None and proc.returncode is None and process_alive(proc.pid):
            _say("{}: stop signal for this job: asking the training (pid {}) to checkpoint and exit".format(
                self.spec.label, proc.pid))
            try:
                os.kill(proc.pid, signal.SIGUSR2)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + self.stop_timeout
            while process_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if process_alive(proc.pid):
                # left running it would hold the run folder's lock against the requeued job's training
                _say("{}: the training still runs after {:.0f} s: killed; the requeued job resumes from the last "
                     "checkpoint it wrote (checkpoints are written whole or not at all)".format(
                         self.spec.label, self.stop_timeout))
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + 10
                while process_alive(proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
            else:
                _say("{}: the training has stopped; requeueing the job".format(self.spec.label))
        return super().checkpoint(*args, **kwargs)


# --------------------------------------------------------------------------------------------------------
# the journal and the jobs' states
# --------------------------------------------------------------------------------------------------------
def journal_path(output):
    return os.path.join(output, JOURNAL)


def read_journal(output):
    """The journal's records (list of dicts, oldest first; torn lines skipped)."""
    path = journal_path(output)
    records = []
    if not os.path.isfile(path):
        return records
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("job_id") and record.get("output_dir"):
                records.append(record)
    return records


def _append_journal(output, record):
    os.makedirs(output, exist_ok=True)
    with open(journal_path(output), "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _latest(records):
    """{absolute OUTPUT_DIR: its last record}."""
    return {os.path.abspath(r["output_dir"]): r for r in records}


class JobState(NamedTuple):
    phase: str  # "pending", "running", "ended" or "unknown"
    detail: str  # what the scheduler said


def _slurm_phase(state):
    word = (state or "").split()[0].upper() if (state or "").strip() else "UNKNOWN"
    word = word.rstrip("+")
    if word in _PENDING:
        return "pending"
    if word in _RUNNING:
        return "running"
    if word == "UNKNOWN":
        return "unknown"
    return "ended"


def _squeue_state(job_id):
    """The job's state as squeue sees it, ``"gone"`` when squeue no longer knows it, ``None`` without an
    answer (no squeue)."""
    try:
        done = subprocess.run(["squeue", "--noheader", "--format=%T", "--jobs", str(job_id)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    words = done.stdout.split()
    if done.returncode == 0:
        return words[0] if words else "gone"
    if "invalid job id" in done.stderr.lower():
        return "gone"
    return None


def _local_job_alive(job_id):
    """Whether submitit's local controller ``job_id`` (a pid) still runs here (not another process that got
    the pid since)."""
    try:
        pid = int(job_id)
    except (TypeError, ValueError):
        return False
    if not process_alive(pid):
        return False
    try:
        with open("/proc/{}/cmdline".format(pid), "rb") as f:
            return b"submitit" in f.read()
    except OSError:
        return True


def job_states(submitit, records):
    """The scheduler's view of ``records``' jobs -> {(executor, job_id): JobState}."""
    states = {}
    slurm_jobs = {}
    for record in records:
        key = (record.get("executor"), str(record["job_id"]))
        if key[0] == "slurm":
            if key[1] not in slurm_jobs:
                slurm_jobs[key[1]] = submitit.SlurmJob(folder=record.get("submitit_folder") or ".", job_id=key[1])
        elif key[0] == "local":
            if record.get("host") != socket.gethostname():
                states[key] = JobState("unknown", "a local job of host {}, not of this one".format(record.get("host")))
            elif _local_job_alive(key[1]):
                states[key] = JobState("running", "its processes run on this machine")
            else:
                states[key] = JobState("ended", "its processes have ended")
        else:
            states[key] = JobState("unknown", "executor {!r} unknown to this version".format(key[0]))
    if slurm_jobs:
        try:  # one sacct call for all of them; the state properties below read what it returned
            next(iter(slurm_jobs.values())).get_info(mode="force")
        except Exception:
            pass
        for job_id, job in slurm_jobs.items():
            try:
                raw = str(job.state)
            except Exception as error:
                raw = "UNKNOWN ({})".format(error)
            phase = _slurm_phase(raw)
            if phase == "unknown":
                queued = _squeue_state(job_id)
                if queued == "gone":
                    phase, raw = "ended", "no longer in the queue (squeue), no record in sacct"
                elif queued:
                    phase, raw = _slurm_phase(queued), queued
                    if phase == "unknown":
                        raw = "UNKNOWN"
                else:
                    raw = "neither sacct nor squeue knows it"
            states[("slurm", job_id)] = JobState(phase, raw)
    return states


class RunStatus(NamedTuple):
    spec: object
    state: str  # finished, running, pending, failed, interrupted, not submitted, unknown
    text: str
    submit: bool  # whether this invocation (re)submits it
    record: Optional[dict] = None  # its last journal record

    @property
    def active(self):
        return self.state in ("running", "pending")


def run_status(spec, record, job, resubmit_unknown=False, adopt=False):
    """One run's state from its folder and its last job (``record`` / ``job``: ``None`` when never submitted).

    Read the job's state before calling this: a job that ends in between then shows as ended with its run's
    marker already there, never as ended without it.
    """
    folder = runner.run_state(spec.output_dir)
    if folder == "finished":
        return RunStatus(spec, "finished", "finished", False, record)
    job_text = "" if record is None else "job {}".format(record["job_id"])
    if record is not None and job.phase in ("pending", "running"):
        said = job.detail.split()[:1]
        detail = "" if record.get("executor") == "local" or said == [job.phase.upper()] else ", " + job.detail
        return RunStatus(spec, job.phase, "{} ({}{})".format(job.phase, job_text, detail), False, record)
    if folder == "unmarked":
        if adopt:
            runner.mark_finished(spec)
        return RunStatus(spec, "finished", "finished (model_final.pth without the runner's marker: taken as "
                                           "finished)", False, record)
    if folder == "running":
        return RunStatus(spec, "running", "running in another process on this machine, not a job of the journal",
                         False, record)
    if record is None:
        if folder == "interrupted":
            return RunStatus(spec, "interrupted", "interrupted (not submitted; resumes from its checkpoint)", True,
                             record)
        return RunStatus(spec, "not submitted", "not submitted", True, record)
    if job.phase == "unknown":
        text = "unknown ({}: {})".format(job_text, job.detail)
        if not resubmit_unknown:
            text += "; not resubmitted: if that job is gone, rerun with --resubmit-unknown"
        return RunStatus(spec, "unknown", text, resubmit_unknown, record)
    last = runner.last_attempt(spec.output_dir) or {}
    if folder == "interrupted" and last.get("exit_code") == EXIT_INTERRUPTED:
        return RunStatus(spec, "interrupted", "interrupted ({} ended: {}; the training wrote its checkpoint and "
                                              "resumes from it)".format(job_text, job.detail), True, record)
    where = ["job log: {}".format(record.get("log") or record.get("submitit_folder"))]
    stdout = os.path.join(spec.output_dir, runner.STDOUT)
    if os.path.isfile(stdout):
        where.append("training output: {}".format(stdout))
    return RunStatus(spec, "failed", "failed ({}: {}; {})".format(job_text, job.detail, "; ".join(where)), True,
                     record)


def statuses(submitit, specs, output, resubmit_unknown=False, adopt=False):
    """Every run's :class:`RunStatus`, from the journal of ``output``."""
    latest = _latest(read_journal(output))
    records = [latest[os.path.abspath(s.output_dir)] for s in specs if os.path.abspath(s.output_dir) in latest]
    jobs = job_states(submitit, records) if records else {}
    result = []
    for spec in specs:
        record = latest.get(os.path.abspath(spec.output_dir))
        job = None if record is None else jobs[(record.get("executor"), str(record["job_id"]))]
        result.append(run_status(spec, record, job, resubmit_unknown=resubmit_unknown, adopt=adopt))
    return result


# --------------------------------------------------------------------------------------------------------
# submitting
# --------------------------------------------------------------------------------------------------------
def _job_name(spec):
    return "reproduce-{}-{}".format(spec.dataset, os.path.basename(os.path.normpath(spec.output_dir)))


def _local_gpu_slots(gpus):
    """GPU groups for the local executor's jobs (lists of int), handed out in turn; ``None`` without GPUs."""
    pool = runner.visible_gpus()
    if not pool:
        return None
    if len(pool) < gpus:
        _fail("--gpus-per-job {} but this machine has {} GPU(s) ({}). Lower --gpus-per-job".format(
            gpus, len(pool), ",".join(pool)))
    if not all(p.isdigit() for p in pool):
        _fail("--submitit-executor local gives GPUs by index, but CUDA_VISIBLE_DEVICES={} names them otherwise; "
              "set it to indices (e.g. 0,1)".format(",".join(pool)))
    return [[int(g) for g in pool[i * gpus:(i + 1) * gpus]] for i in range(len(pool) // gpus)]


def make_executor(submitit, opts):
    """submitit's executor for ``opts`` (jobs' files in ``opts.folder/<job id>``)."""
    folder = os.path.join(opts.folder, "%j")
    if opts.executor == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=opts.max_timeouts)
        executor.update_parameters(timeout_min=opts.time_min, signal_delay_s=opts.signal_delay, nodes=1,
                                   tasks_per_node=1, gpus_per_node=0)
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=opts.max_timeouts)
    except RuntimeError as error:
        _fail("cannot submit SLURM jobs from this machine: {} Run the command where sbatch and srun are (a "
              "login node of the cluster), or try the jobs here with --submitit-executor local".format(error))
    params = {"time": opts.time_min, "nodes": 1, "ntasks_per_node": 1, "gpus_per_node": opts.gpus,
              "signal_delay_s": opts.signal_delay}
    if opts.partition:
        params["partition"] = opts.partition
    if opts.account:
        params["account"] = opts.account
    if opts.cpus:
        params["cpus_per_task"] = opts.cpus
    if opts.sbatch:
        params["additional_parameters"] = dict(opts.sbatch)
    executor.update_parameters(**params)
    return executor


def _submit(submitit, opts, to_submit, output, num_gpus, python, verbose, echo, total):
    """Submit ``to_submit`` (``(number, RunStatus)`` pairs), journal and print each."""
    executor = make_executor(submitit, opts)
    slots = _local_gpu_slots(opts.gpus) if opts.executor == "local" else None
    for k, (number, status) in enumerate(to_submit):
        spec = status.spec
        job_fn = TrainingJob(spec, num_gpus=num_gpus, python=python, cwd=os.getcwd(),
                             stop_timeout=stop_wait(opts.signal_delay), verbose=verbose)
        if opts.executor == "slurm":
            executor.update_parameters(job_name=_job_name(spec))
        elif slots:
            executor.update_parameters(gpus_per_node=opts.gpus, visible_gpus=slots[k % len(slots)])
        resume = runner.run_state(spec.output_dir) == "interrupted"
        try:
            job = executor.submit(job_fn)
        except Exception as error:
            _fail("submitting {} failed: {}\nThe runs submitted before it are in {}; rerun the command to submit "
                  "the rest.".format(spec.label, error, journal_path(output)))
        now = time.time()
        record = {"event": "submitted", "label": spec.label, "output_dir": os.path.abspath(spec.output_dir),
                  "job_id": str(job.job_id), "executor": opts.executor, "host": socket.gethostname(),
                  "submitit_folder": os.path.join(opts.folder, "%j"), "log": str(job.paths.stderr), "time": now,
                  "submitted_at": datetime.datetime.fromtimestamp(now).astimezone().isoformat(timespec="seconds"),
                  "resume": resume, "gpus": opts.gpus}
        _append_journal(output, record)
        echo("[{}/{}] {}: {} -> {}submitted as job {}{}".format(
            number, total, spec.label, status.text, "" if status.record is None else "re", job.job_id,
            ", resumes from its checkpoint" if resume else ""))


def _summary(found):
    counts = {}
    for status in found:
        counts[status.state] = counts.get(status.state, 0) + 1
    order = ("finished", "running", "pending", "failed", "interrupted", "unknown", "not submitted")
    return ", ".join("{} {}".format(counts[s], s) for s in order if s in counts)


def _wait(submitit, specs, opts, output, echo):
    """Poll until no job of ``specs`` is queued or running -> the final statuses."""
    shown = None  # the states printed last: only changes are printed
    while True:
        found = statuses(submitit, specs, output, adopt=True)
        if shown is not None:
            for i, status in enumerate(found, 1):
                if shown[i - 1] != status.text:
                    echo("[{}/{}] {}: {}".format(i, len(specs), status.spec.label, status.text))
        shown = [status.text for status in found]
        if not any(s.active for s in found):
            return found
        time.sleep(_POLL_S[opts.executor])


def main(args, specs, output, preset, num_gpus, echo=print, python=None, report=None):
    """``--launcher slurm``: print every run's state, submit what needs a job, report -> exit status."""
    opts = options(args, output, num_gpus)
    submitting = not (args.report_only or args.dry_run)
    if submitting and opts.time_min is None:
        _fail("--launcher slurm needs --time, the time limit of each job (e.g. --time 24:00:00); submitit's "
              "default is a few minutes. A run longer than the limit is checkpointed and requeued")
    submitit = require_submitit()

    echo("{} run{}, SLURM jobs through submitit ({} executor; journal {}):".format(
        len(specs), "" if len(specs) == 1 else "s", opts.executor, journal_path(output)))
    found = statuses(submitit, specs, output, resubmit_unknown=opts.resubmit_unknown, adopt=submitting)
    to_submit = []
    for i, status in enumerate(found, 1):
        if status.submit and submitting:
            to_submit.append((i, status))  # printed with its job id once submitted
            continue
        line = "[{}/{}] {}: {}".format(i, len(specs), status.spec.label, status.text)
        if status.submit and args.dry_run:
            state = runner.run_state(status.spec.output_dir)
            line += " -> would submit: " + runner.format_command(runner.train_command(
                status.spec, num_gpus, resume=state == "interrupted", python=python))
        echo(line)
    if to_submit:
        _submit(submitit, opts, to_submit, output, num_gpus, python, args.verbose, echo, len(specs))
    if args.dry_run:
        echo("--dry-run: nothing submitted")
        return 0

    if opts.wait and (to_submit or any(s.active for s in found)):
        echo("waiting for the jobs ({})...".format(
            "Ctrl-C stops them too, they are processes of this terminal; a rerun resumes them"
            if opts.executor == "local" else "Ctrl-C stops waiting; the jobs go on"))
        try:
            found = _wait(submitit, specs, opts, output, echo)
        except KeyboardInterrupt:
            echo("stopped waiting; rerun the command (or with --report-only) to see how the runs are doing")
            return 130
    elif to_submit:
        found = statuses(submitit, specs, output)
    echo("{}{}".format(_summary(found), "" if opts.wait else
                       ". Rerun this command to see how they are doing (it resubmits runs whose job failed); "
                       "--report-only reports without submitting"))
    if report is not None:
        report(specs, output, preset, echo)
    if opts.wait:
        unfinished = [s for s in found if s.state != "finished"]
        if unfinished:
            echo("{} run(s) did not finish: {}. Rerun the command to resubmit them.".format(
                len(unfinished), ", ".join(s.spec.label for s in unfinished)))
            return 1
    return 0
