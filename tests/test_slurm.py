"""tools/reproduce.py --launcher slurm (submitit) and --launcher local --gpus-per-job, without a cluster.

The trainings are a fake interpreter (``FAKE_TRAINER``, passed as the runner's ``python``) that behaves like
``python -m fastreid_ewth.train ... OUTPUT_DIR d [--resume]`` where it matters here: it counts steps, stops
on a signal after its step with a checkpoint and exit status 75, continues from it with ``--resume``, writes
``model_final.pth`` at the end, and records its command line and CUDA_VISIBLE_DEVICES. The cluster path runs
for real through submitit's LocalExecutor (``--submitit-executor local``: each job a process of its own,
under submitit's controller, with submitit's signal handling and requeueing); the SLURM side of the journal
(sacct states, sbatch parameters) runs against stand-ins for ``submitit.SlurmJob`` and ``SlurmExecutor``.
"""
import json
import os
import shutil
import signal
import stat
import sys
import time

import pytest

from fastreid_ewth.reliability.lock import process_alive
from fastreid_ewth.reproduce import cli, runner, slurm

submitit = pytest.importorskip("submitit")

FAKE_TRAINER = r'''
import json
import os
import signal
import sys
import time

args = sys.argv[1:]
if args[:2] != ["-m", "fastreid_ewth.train"]:
    sys.exit("fake trainer: not a training command: {}".format(args))
args = args[2:]
out = args[args.index("OUTPUT_DIR") + 1]
resume = "--resume" in args
settings = {}  # the "config": key: value lines
with open(args[args.index("--config-file") + 1]) as f:
    for line in f:
        key, _, value = line.partition(":")
        if value.strip():
            settings[key.strip()] = value.strip()
steps = int(settings.get("steps", "3"))
pause = float(settings.get("sleep", "0.05"))
os.makedirs(out, exist_ok=True)

stop = []


def request(signum, frame):
    if not stop:  # a second signal while stopping is ignored, as the real training does
        stop.append(signum)


for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
    signal.signal(s, request)


def wait_for(condition, seconds):
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


calls = os.path.join(out, "fake_calls.jsonl")
earlier = 0
if os.path.exists(calls):
    with open(calls) as f:
        earlier = sum(1 for _ in f)
step = 0
if resume:
    with open(os.path.join(out, "fake_checkpoint")) as f:
        step = int(f.read())
record = {"argv": args, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "omp": os.environ.get("OMP_NUM_THREADS"),
          "pid": os.getpid(), "resume": resume, "start_step": step}
if "rendezvous" in settings:  # announce this training, then wait for `meet` of them to be there at once
    folder = settings["rendezvous"]
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, os.path.basename(out)), "w").close()
    record["met"] = wait_for(lambda: len(os.listdir(folder)) >= int(settings.get("meet", "2")), 60)
with open(calls, "a") as f:
    f.write(json.dumps(record) + "\n")
if "go" in settings:  # hold until the test says go
    wait_for(lambda: os.path.exists(settings["go"]) or stop, 300)
if settings.get("fail_once") and earlier == 0:
    print("fake trainer: failing on purpose", flush=True)
    sys.exit(3)
while step < steps:
    time.sleep(pause)
    step += 1
    with open(os.path.join(out, "fake_steps.txt"), "a") as f:
        f.write("{}\n".format(step))
    if stop:
        with open(os.path.join(out, "fake_checkpoint"), "w") as f:
            f.write(str(step))
        with open(os.path.join(out, "last_checkpoint"), "w") as f:
            f.write("fake_checkpoint")
        print("fake trainer: stopped by signal {} after step {}".format(stop[0], step), flush=True)
        sys.exit(75)
open(os.path.join(out, "model_final.pth"), "w").close()
print("fake trainer: done", flush=True)
'''


def _fake_python(folder):
    """The fake trainer as an executable that takes the interpreter's place in the training command."""
    path = folder / "fake_python"
    path.write_text("#!{}\n{}".format(sys.executable, FAKE_TRAINER))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def _configs(folder, **settings):
    """One "config" file per keyword (the run's name), holding the fake trainer's settings."""
    paths = []
    for name, values in settings.items():
        path = folder / "{}.yml".format(name)
        path.write_text("".join("{}: {}\n".format(k, v) for k, v in values.items()))
        paths.append(str(path))
    return paths


def _jsonl(path):
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _steps(run):
    path = os.path.join(run, "fake_steps.txt")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [int(line) for line in f if line.strip()]


def _poll(condition, seconds, what):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "waited {} s for {}".format(seconds, what)
        time.sleep(0.1)


def _records(out, run):
    return [r for r in slurm.read_journal(str(out)) if r["output_dir"] == os.path.abspath(run)]


def _kill_leftovers(out, runs):
    """SIGKILL what a failed test may have left running: the controllers, jobs and trainings it started."""
    pids = [int(r["job_id"]) for r in slurm.read_journal(str(out)) if r.get("executor") == "local"]
    for run in runs:
        for start in (a for a in _jsonl(os.path.join(run, runner.ATTEMPTS)) if a.get("event") == "start"):
            pids += [start.get("launcher_pid"), start.get("pid")]
    for pid in pids:
        if isinstance(pid, int) and process_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


# --------------------------------------------------------------------------------------------------------
# the cluster path for real, through submitit's LocalExecutor
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    """Two runs submitted as jobs: ``long`` is sent SIGUSR2 mid-training (as SLURM's --signal would) and
    requeued, ``flaky`` fails once and is resubmitted by a rerun. Both hold until the file ``go`` exists, so
    that the runner can be rerun and asked for a report while every job runs. (Few jobs: each one's process
    imports torch.)"""
    problem = slurm.plugin_problem()
    if problem:
        pytest.skip("this submitit cannot start jobs here ({}); install setup.cfg's slurm extra".format(problem))
    root = tmp_path_factory.mktemp("cluster")
    go = root / "go"
    python = _fake_python(root)
    configs = _configs(root, long={"steps": 40, "sleep": 0.2, "go": go}, flaky={"steps": 2, "fail_once": 1, "go": go})
    out = root / "out"
    argv = ["--configs", *configs, "--datasets", "SynthReID", "--output", str(out), "--launcher", "slurm",
            "--submitit-executor", "local", "--time", "30", "--signal-delay", "60"]
    runs = {name: str(out / "SynthReID" / name) for name in ("long", "flaky")}
    seen = {"argv": argv, "out": out, "runs": runs, "python": python}

    def invoke(name, *extra):
        lines = []
        seen[name + "_code"] = cli.main(argv + list(extra), echo=lines.append, python=python)
        seen[name] = lines
        seen[name + "_journal"] = slurm.read_journal(str(out))

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        try:
            invoke("submit")
            # every job is training (its start record names the job's process) and waits for "go"
            _poll(lambda: all(_records(out, r) and _jsonl(os.path.join(r, "fake_calls.jsonl")) for r in runs.values()),
                  240, "both trainings to start")
            invoke("rerun_running")
            invoke("report_only", "--report-only")
            go.touch()
            _poll(lambda: len(_steps(runs["long"])) >= 3, 120, "long's third step")
            first = [a for a in _jsonl(os.path.join(runs["long"], runner.ATTEMPTS)) if a["event"] == "start"][0]
            os.kill(first["launcher_pid"], signal.SIGUSR2)  # what SLURM sends the job before its time limit
            flaky_job = _records(out, runs["flaky"])[0]["job_id"]
            _poll(lambda: not process_alive(int(flaky_job)), 120, "the flaky job to fail")
            invoke("rerun_failed")
            invoke("wait", "--wait")
            invoke("rerun_finished")
        finally:
            _kill_leftovers(out, runs.values())
    return seen


def test_jobs_are_submitted_and_journaled_with_their_job_ids(local_cluster):
    out, runs = local_cluster["out"], local_cluster["runs"]
    assert local_cluster["submit_code"] == 0
    journal = local_cluster["submit_journal"]
    assert [r["output_dir"] for r in journal] == [os.path.abspath(runs[n]) for n in ("long", "flaky")]
    for record in journal:
        assert record["event"] == "submitted" and record["executor"] == "local" and record["gpus"] == 1
        assert record["job_id"].isdigit() and record["resume"] is False
        assert record["submitit_folder"] == os.path.join(str(out / "submitit"), "%j")
        assert record["log"] == os.path.join(str(out / "submitit"), record["job_id"],
                                             "{}_0_log.err".format(record["job_id"]))
        assert set(record) >= {"label", "time", "submitted_at", "host"}
    assert len({r["job_id"] for r in journal}) == 2
    printed = "\n".join(local_cluster["submit"])
    for record in journal:
        assert "{}: not submitted -> submitted as job {}".format(record["label"], record["job_id"]) in printed
    assert "## Plots" not in printed and "written: {}".format(out / "REPORT.md") in printed
    # each job records itself in its run's attempts: the training's pid, the job process's and the job id
    for name, record in zip(("long", "flaky"), journal):
        start = _jsonl(os.path.join(runs[name], runner.ATTEMPTS))[0]
        assert start["event"] == "start" and start["job_id"] == record["job_id"]
        assert start["launcher_pid"] != start["pid"] and start["launcher_pid"] != int(record["job_id"])


def test_a_rerun_while_jobs_run_submits_nothing_and_reports_their_state(local_cluster):
    journal = local_cluster["submit_journal"]
    for name in ("rerun_running", "report_only"):
        assert local_cluster[name + "_code"] == 0
        assert local_cluster[name + "_journal"] == journal  # not a single submission
        printed = "\n".join(local_cluster[name])
        for record in journal:
            assert "{}: running (job {})".format(record["label"], record["job_id"]) in printed, printed
        assert "2 running" in printed
        assert "submitted as" not in printed
    assert (local_cluster["out"] / "REPORT.md").is_file()


def test_a_signalled_job_is_requeued_and_resumes_its_run(local_cluster):
    run = local_cluster["runs"]["long"]
    assert len(_records(local_cluster["out"], run)) == 1  # requeued by submitit, never resubmitted
    attempts = _jsonl(os.path.join(run, runner.ATTEMPTS))
    assert [(a["event"], a.get("resume"), a.get("exit_code")) for a in attempts] == [
        ("start", False, None), ("end", None, 75), ("start", True, None), ("end", None, 0)]
    first, second = attempts[0], attempts[2]
    assert first["job_id"] == second["job_id"]  # the same job, restarted
    assert first["launcher_pid"] != second["launcher_pid"]  # in a new process
    assert attempts[1]["left_by"] == "SystemExit"  # submitit's requeue left train_run; the end is recorded
    calls = _jsonl(os.path.join(run, "fake_calls.jsonl"))
    assert len(calls) == 2 and "--resume" not in calls[0]["argv"] and "--resume" in calls[1]["argv"]
    assert calls[1]["start_step"] >= 3
    assert _steps(run) == list(range(1, 41))  # continued after the checkpoint's step, nothing trained twice
    marker = runner.read_marker(run)
    assert marker["attempts"] == 2 and marker["resumed"] is True
    log = local_cluster["submit_journal"][0]["log"].replace("_log.err", "_log.out")
    with open(log) as f:
        job_output = f.read()
    assert "asking the training (pid {}) to checkpoint".format(first["pid"]) in job_output
    assert "the training has stopped; requeueing the job" in job_output


def test_a_failed_job_is_reported_with_its_log_and_resubmitted(local_cluster):
    out, run = local_cluster["out"], local_cluster["runs"]["flaky"]
    records = _records(out, run)
    assert len(records) == 2 and records[0]["job_id"] != records[1]["job_id"]
    printed = "\n".join(local_cluster["rerun_failed"])
    failed = [line for line in printed.splitlines() if "SynthReID flaky: failed (job {}".format(records[0]["job_id"])
              in line]
    assert len(failed) == 1 and "resubmitted as job {}".format(records[1]["job_id"]) in failed[0], printed
    assert "job log: {}".format(records[0]["log"]) in failed[0]
    with open(records[0]["log"]) as f:
        assert "fake trainer: failing on purpose" in f.read()  # the error carries the training's last lines
    assert runner.read_marker(run)["attempts"] == 2


def test_wait_then_rerun_after_the_jobs_finished(local_cluster):
    out = local_cluster["out"]
    assert local_cluster["wait_code"] == 0, "\n".join(local_cluster["wait"])
    assert "2 finished" in "\n".join(local_cluster["wait"])
    for run in local_cluster["runs"].values():
        assert runner.run_state(run) == "finished"
    assert local_cluster["rerun_finished_code"] == 0
    assert local_cluster["rerun_finished_journal"] == local_cluster["wait_journal"]  # nothing submitted again
    assert len(local_cluster["wait_journal"]) == 3  # two runs, one resubmission
    printed = "\n".join(local_cluster["rerun_finished"])
    assert printed.count(": finished") == 2 and "submitted as" not in printed
    with open(out / "report.csv") as f:
        assert f.read().count("SynthReID") == 2


# --------------------------------------------------------------------------------------------------------
# the journal against SLURM's states, and what is passed to sbatch (stand-ins for submitit's SLURM classes)
# --------------------------------------------------------------------------------------------------------
class _FakeSlurm:
    def __init__(self):
        self.states = {}  # job id -> sacct state
        self.executors = []
        self.submitted = []  # (job id, callable, parameters at submission)
        self.next_id = 1000
        fake = self

        class Paths:
            def __init__(self, folder, job_id):
                self.stderr = os.path.join(folder.replace("%j", job_id), "{}_0_log.err".format(job_id))

        class Job:
            def __init__(self, folder, job_id):
                self.job_id, self.paths = job_id, Paths(str(folder), job_id)

            @property
            def state(self):
                return fake.states.get(self.job_id, "UNKNOWN")

            def get_info(self, mode="force"):
                return {}

        class Executor:
            def __init__(self, folder, max_num_timeout=3):
                self.folder, self.max_num_timeout, self.parameters = str(folder), max_num_timeout, {}
                fake.executors.append(self)

            def update_parameters(self, **kwargs):
                self.parameters.update(kwargs)

            def submit(self, fn):
                fake.next_id += 1
                job_id = str(fake.next_id)
                fake.submitted.append((job_id, fn, dict(self.parameters)))
                fake.states[job_id] = "PENDING"
                return Job(self.folder, job_id)

        self.Job, self.Executor = Job, Executor


@pytest.fixture
def fake_slurm(monkeypatch):
    fake = _FakeSlurm()
    monkeypatch.setattr(submitit, "SlurmJob", fake.Job)
    monkeypatch.setattr(submitit, "SlurmExecutor", fake.Executor)
    monkeypatch.setattr(slurm, "_squeue_state", lambda job_id: None)  # no squeue here
    return fake


def _journal_record(out, run, job_id):
    return {"event": "submitted", "label": os.path.basename(run), "output_dir": os.path.abspath(run),
            "job_id": job_id, "executor": "slurm", "host": "login1", "time": 0.0,
            "submitit_folder": os.path.join(str(out), "submitit", "%j"),
            "log": os.path.join(str(out), "submitit", job_id, "{}_0_log.err".format(job_id))}


def test_sbatch_parameters_and_which_runs_are_resubmitted_by_their_slurm_state(tmp_path, fake_slurm):
    out = tmp_path / "out"
    configs = _configs(tmp_path, c1={}, c2={}, c3={}, c4={})
    run = {(d, c): str(out / d / c) for d in ("D1", "D2") for c in ("c1", "c2", "c3", "c4")}
    cases = {("D1", "c1"): "PENDING", ("D1", "c2"): "RUNNING", ("D1", "c3"): "FAILED",
             ("D1", "c4"): "COMPLETED",  # but no marker: the training did not finish
             ("D2", "c1"): "COMPLETED", ("D2", "c2"): "UNKNOWN", ("D2", "c3"): "TIMEOUT"}
    os.makedirs(out)
    with open(out / slurm.JOURNAL, "w") as f:
        for i, key in enumerate(cases):
            f.write(json.dumps(_journal_record(out, run[key], str(11 + i))) + "\n")
            fake_slurm.states[str(11 + i)] = cases[key]
    os.makedirs(run[("D2", "c1")])
    for name in ("model_final.pth", runner.MARKER):
        (out / "D2" / "c1" / name).write_text("{}")
    os.makedirs(run[("D2", "c3")])  # stopped at its time limit after too many requeues: checkpoint, exit 75
    (out / "D2" / "c3" / "last_checkpoint").write_text("model_interrupted.pth")
    (out / "D2" / "c3" / runner.ATTEMPTS).write_text(
        json.dumps({"event": "start", "attempt": 1, "time": 1.0, "pid": 1, "host": "node7"}) + "\n"
        + json.dumps({"event": "end", "attempt": 1, "time": 2.0, "exit_code": 75}) + "\n")
    argv = ["--configs", *configs, "--datasets", "D1", "D2", "--output", str(out), "--launcher", "slurm",
            "--partition", "gpu", "--time", "1-2:03:04", "--account", "acc", "--gpus-per-job", "2",
            "--cpus-per-job", "8", "--sbatch", "mem=64G", "--sbatch", "constraint=a100", "--signal-delay", "120",
            "--max-timeouts", "4"]

    lines = []
    assert cli.main(argv + ["--report-only"], echo=lines.append) == 0
    assert fake_slurm.executors == [] and len(slurm.read_journal(str(out))) == 7  # nothing submitted
    printed = "\n".join(lines)
    for expected in ("D1 c1: pending (job 11)", "D1 c2: running (job 12)", "D1 c3: failed (job 13: FAILED; "
                     "job log: {}".format(os.path.join(str(out), "submitit", "13", "13_0_log.err")),
                     "D1 c4: failed (job 14: COMPLETED", "D2 c1: finished", "D2 c2: unknown (job 16",
                     "--resubmit-unknown", "D2 c3: interrupted (job 17 ended: TIMEOUT", "D2 c4: not submitted"):
        assert expected in printed, printed

    lines = []
    assert cli.main(argv, echo=lines.append, python="/opt/py/bin/python") == 0
    (executor,) = fake_slurm.executors
    assert executor.folder == os.path.join(str(out), "submitit", "%j") and executor.max_num_timeout == 4
    submitted = {fn.spec.output_dir: (job_id, fn, params) for job_id, fn, params in fake_slurm.submitted}
    assert set(submitted) == {run[k] for k in (("D1", "c3"), ("D1", "c4"), ("D2", "c3"), ("D2", "c4"))}
    job_id, fn, params = submitted[run[("D2", "c4")]]
    assert params == {"time": 26 * 60 + 4, "nodes": 1, "ntasks_per_node": 1, "gpus_per_node": 2,
                      "signal_delay_s": 120, "partition": "gpu", "account": "acc", "cpus_per_task": 8,
                      "additional_parameters": {"mem": "64G", "constraint": "a100"}, "job_name": "reproduce-D2-c4"}
    assert isinstance(fn, submitit.helpers.Checkpointable)
    assert (fn.num_gpus, fn.python, fn.cwd, fn.stop_timeout) == (2, "/opt/py/bin/python", os.getcwd(), 105.0)
    journal = slurm.read_journal(str(out))
    assert len(journal) == 11
    new = {r["output_dir"]: r for r in journal[7:]}
    assert {r["executor"] for r in new.values()} == {"slurm"} and new[os.path.abspath(run[("D2", "c4")])][
        "job_id"] == job_id
    assert new[os.path.abspath(run[("D2", "c3")])]["resume"] is True
    printed = "\n".join(lines)
    assert "D2 c4: not submitted -> submitted as job {}".format(job_id) in printed
    assert "D2 c3: interrupted (job 17 ended" in printed and "resumes from its checkpoint" in printed

    lines = []  # the local launcher's report says where the jobs' states are
    assert cli.main(argv[:argv.index("--launcher")] + ["--report-only"], echo=lines.append) == 0
    assert "submitted with --launcher slurm: add --launcher slurm to see their jobs' states" in "\n".join(lines)

    # the new jobs are pending: a rerun submits nothing; the unknown job only with --resubmit-unknown
    assert cli.main(argv, echo=lambda _: None) == 0 and len(fake_slurm.submitted) == 4
    assert cli.main(argv + ["--resubmit-unknown"], echo=lambda _: None) == 0
    assert [fn.spec.output_dir for _, fn, _ in fake_slurm.submitted[4:]] == [run[("D2", "c2")]]


# --------------------------------------------------------------------------------------------------------
# --launcher local --jobs N --gpus-per-job G
# --------------------------------------------------------------------------------------------------------
def test_parallel_local_runs_get_gpus_of_their_own(tmp_path, monkeypatch):
    python = _fake_python(tmp_path)
    meet = tmp_path / "meet"
    # a and b run at once (each waits until both are there); c starts on the GPUs the first to end gives back
    configs = _configs(tmp_path, a={"rendezvous": meet}, b={"rendezvous": meet}, c={"rendezvous": meet})
    out = tmp_path / "out"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    lines = []
    assert cli.main(["--configs", *configs, "--datasets", "SynthReID", "--output", str(out), "--jobs", "2",
                     "--gpus-per-job", "2"], echo=lines.append, python=python) == 0, "\n".join(lines)
    calls = {name: _jsonl(str(out / "SynthReID" / name / "fake_calls.jsonl")) for name in "abc"}
    assert all(len(c) == 1 for c in calls.values())
    a, b, c = (calls[name][0] for name in "abc")
    assert a["met"] and b["met"]  # they overlapped in time
    assert {a["cuda"], b["cuda"]} == {"0,1", "2,3"}
    assert c["cuda"] in ("0,1", "2,3")
    for call in (a, b, c):
        i = call["argv"].index("--num-gpus")
        assert call["argv"][i + 1] == "2"


def test_parallel_local_runs_without_gpus_per_job_share_the_environment(tmp_path, monkeypatch):
    python = _fake_python(tmp_path)
    configs = _configs(tmp_path, a={}, b={})
    out = tmp_path / "out"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cli.main(["--configs", *configs, "--datasets", "SynthReID", "--output", str(out), "--jobs", "2"],
                    echo=lambda _: None, python=python) == 0
    for name in "ab":
        (call,) = _jsonl(str(out / "SynthReID" / name / "fake_calls.jsonl"))
        assert call["cuda"] == "0,1,2,3" and "--num-gpus" not in call["argv"]
        assert call["omp"] == str(max(1, (os.cpu_count() or 1) // 2))


@pytest.mark.parametrize("visible,message", [("0,1,2,3", "--jobs 3 × --gpus-per-job 2 needs 6 GPUs, but there are 4"),
                                             ("", "needs 6 GPUs, but there are 0")])
def test_too_few_gpus_for_the_parallel_runs_is_an_error(tmp_path, monkeypatch, visible, message):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    configs = _configs(tmp_path, a={})
    with pytest.raises(SystemExit) as error:
        cli.main(["--configs", *configs, "--output", str(tmp_path / "out"), "--jobs", "3", "--gpus-per-job", "2"],
                 python=_fake_python(tmp_path))
    assert message in str(error.value) and "CUDA_VISIBLE_DEVICES" in str(error.value)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------------
# bad option values
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,minutes", [("90", 90), ("24:00:00", 1440), ("2-00:00:00", 2880), ("0:30:01", 31),
                                          ("1-2:03:04", 1564)])
def test_time_limits_in_slurm_formats(text, minutes):
    assert slurm.parse_time(text) == minutes


SLURM = ["--launcher", "slurm"]


@pytest.mark.parametrize("extra,message", [
    (SLURM + ["--time", "abc"], "--time 'abc' is not a time limit: give minutes (--time 90), H:MM:SS"),
    (SLURM + ["--time", "12:00"], "--time '12:00' is ambiguous"),
    (SLURM + ["--time", "1:75:00"], "minutes and seconds go up to 59"),
    (SLURM + ["--time", "0"], "at least a minute"),
    (SLURM, "--launcher slurm needs --time"),
    (SLURM + ["--time", "10", "--sbatch", "mem"], "--sbatch takes KEY=VALUE, an sbatch option without its dashes and "
                                                  "its value, e.g. --sbatch mem=64G or --sbatch constraint=a100; got "
                                                  "'mem'"),
    (SLURM + ["--time", "10", "--sbatch", "=64G"], "got '=64G'"),
    (SLURM + ["--time", "10", "--sbatch", "time=20"], "--sbatch time=20: use --time instead"),
    (SLURM + ["--time", "10", "--sbatch", "cpus_per_task=4"], "use --cpus-per-job instead"),
    (SLURM + ["--time", "1", "--signal-delay", "90"], "--signal-delay 90 s is not shorter than --time 1 (60 s)"),
    (SLURM + ["--time", "10", "--signal-delay", "0"], "--signal-delay must be at least 1 second, got 0"),
    (SLURM + ["--time", "10", "--cpus-per-job", "0"], "--cpus-per-job must be >= 1, got 0"),
    (SLURM + ["--time", "10", "--max-timeouts", "-1"], "--max-timeouts must be >= 0, got -1"),
    (SLURM + ["--time", "10", "--jobs", "2"], "--jobs is for --launcher local"),
    (["--gpus-per-job", "0"], "--gpus-per-job must be >= 1, got 0"),
    (SLURM + ["--time", "10", "--gpus-per-job", "-1"], "--gpus-per-job must be >= 1, got -1"),
    (["--gpus-per-job", "2", "--num-gpus", "4"], "--num-gpus 4 contradicts --gpus-per-job 2"),
    (["--num-gpus", "0"], "--num-gpus must be >= 1, got 0"),
    (["--partition", "gpu"], "--partition works only with --launcher slurm. Add --launcher slurm"),
    (["--time", "10", "--wait"], "--time, --wait work only with --launcher slurm"),
    (["--submitit-executor", "local"], "--submitit-executor works only with --launcher slurm"),
])
def test_bad_option_values_name_the_value_and_the_fix(tmp_path, extra, message):
    configs = _configs(tmp_path, a={})
    with pytest.raises(SystemExit) as error:
        cli.main(["--configs", *configs, "--output", str(tmp_path / "out")] + extra)
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_without_submitit_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    configs = _configs(tmp_path, a={})
    with pytest.raises(SystemExit) as error:
        cli.main(["--configs", *configs, "--output", str(tmp_path / "out"), "--launcher", "slurm", "--time", "10"])
    assert "pip install 'fastreid_ewth[slurm]'" in str(error.value) and "pip install submitit" in str(error.value)


def test_a_submitit_that_cannot_start_jobs_here_is_refused_before_submitting(tmp_path, monkeypatch):
    from submitit.core import plugins

    def broken():
        raise KeyError("submitit")  # submitit 1.5.4's plugin discovery on Python < 3.10

    monkeypatch.setattr(plugins, "get_executors", broken)
    configs = _configs(tmp_path, a={})
    with pytest.raises(SystemExit) as error:
        cli.main(["--configs", *configs, "--output", str(tmp_path / "out"), "--launcher", "slurm", "--time", "10",
                  "--submitit-executor", "local"])
    assert "KeyError: 'submitit'" in str(error.value) and "pip install 'submitit>=1.5,<2,!=1.5.4'" in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("srun") is not None, reason="a SLURM client is installed here")
def test_without_slurm_the_error_points_to_the_local_executor(tmp_path):
    configs = _configs(tmp_path, a={})
    with pytest.raises(SystemExit) as error:
        cli.main(["--configs", *configs, "--output", str(tmp_path / "out"), "--launcher", "slurm", "--time", "10"])
    assert "cannot submit SLURM jobs from this machine" in str(error.value)
    assert "--submitit-executor local" in str(error.value)
    assert not slurm.read_journal(str(tmp_path / "out"))
