"""Command line of ``tools/reproduce.py`` (also ``python -m fastreid_ewth.reproduce``): run the paper's table
(or a preset, or any configs), then report and plot next to the published numbers (``paper``).

Every training is ``python -m fastreid_ewth.train`` in a process of its own (see ``runner``). The config
files are the user's: ``--configs`` paths, or for the paper's 16 and the presets the files of a ``projects/``
folder, by default ``projects`` in the current folder (the root of a checkout), else ``--projects DIR``.

``--launcher local`` (the default) trains here, ``--jobs`` at a time; ``--launcher slurm`` submits each
unfinished run as a SLURM job through submitit instead (``slurm``).
"""
import argparse
import concurrent.futures
import os
import queue
import statistics
import sys
import threading

from .paper import PAPER_CONFIGS, PAPER_DATASETS
from .presets import PRESETS
from .report import collect, run_records, write_report
from .runner import (FORBIDDEN_OPTS, RunSpec, format_command, run_state, stdout_tail, train_command, train_run,
                     visible_gpus)

#: Where the paper's configs and the presets' are looked up unless ``--projects`` says otherwise: relative
#: to the current folder, i.e. a checkout's root (the package ships no config files).
DEFAULT_PROJECTS = "projects"

__all__ = ["main", "build_parser", "build_specs"]


def build_parser(prog="tools/reproduce.py"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train a set of project configs on a set of datasets (one OUTPUT_DIR per run; finished runs "
                    "are skipped, interrupted ones resumed), then write REPORT.md, report.csv, runs.csv and PNG "
                    "plots with the published numbers (the EWTH paper's, or for the loss zoo's configs their "
                    "codebases') next to the measured ones.",
        epilog="Example: tools/reproduce.py --configs projects/BoT_TH.yml projects/BoT_HNEWTH.yml "
               "--datasets Market1501 --output logs/repro --opts SOLVER.IMS_PER_BATCH 64")
    p.add_argument("--configs", nargs="+", metavar="YML",
                   help="project configs (default: the paper's 16, {BoT,AGW}_*.yml in --projects)")
    p.add_argument("--projects", metavar="DIR", default=DEFAULT_PROJECTS,
                   help="folder of the project configs that the paper's runs (no --configs) and --preset use "
                        "(default: %(default)s, relative to the current folder: a checkout's projects/)")
    p.add_argument("--datasets", nargs="+", metavar="NAME",
                   help="fastreid dataset names (default: {})".format(" ".join(PAPER_DATASETS)))
    p.add_argument("--seeds", nargs="+", type=int, metavar="N",
                   help="one run per seed (SEED N, after --opts), reported as mean ± std; default: one run with "
                        "the config's SEED")
    p.add_argument("--output", metavar="DIR", help="output folder (default: logs/reproduce; --preset synth: "
                                                   "logs/compare, zoo: logs/zoo); runs go to "
                                                   "DIR/<dataset>/<config>[-seedN]")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a predefined set of runs (synth: TH vs HNEWTH on "
                                                             "SynthReID; zoo: the loss zoo's 22 configs "
                                                             "projects/zoo/*.yml on SynthReID, small backbone; "
                                                             "both 3 seeds, CPU-sized)")
    p.add_argument("--num-gpus", type=int, metavar="N",
                   help="passed to every training (python -m fastreid_ewth.train --num-gpus N; default 1, with "
                        "--gpus-per-job: G)")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local (default): train here, --jobs at a time; slurm: submit each unfinished run as one "
                        "SLURM job through submitit (pip install 'fastreid_ewth[slurm]'), print every run's state "
                        "and exit; rerun the command to see progress and to resubmit failed runs")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="--launcher local: trainings at once (default 1; --preset synth, zoo: 2), each with "
                        "OMP_NUM_THREADS = cores / N unless OMP_NUM_THREADS is set. Without --gpus-per-job the "
                        "parallel runs share the GPUs there are (for CPU machines); with --gpus-per-job G each "
                        "gets G GPUs of its own")
    p.add_argument("--gpus-per-job", type=int, metavar="G",
                   help="GPUs of each training, also its --num-gpus. --launcher local: each of the --jobs parallel "
                        "runs gets G GPUs of its own through CUDA_VISIBLE_DEVICES, taken from this process's "
                        "CUDA_VISIBLE_DEVICES (else all GPUs) and given back when the run ends; --launcher slurm: "
                        "the GPUs each job asks for (default: --num-gpus, 1)")
    p.add_argument("--dry-run", action="store_true", help="print the training commands and exit")
    p.add_argument("--report-only", action="store_true", help="train nothing; report on what is there")
    p.add_argument("--verbose", action="store_true",
                   help="show the training output here (default: in each run's reproduce_stdout.log)")
    slurm = p.add_argument_group(
        "--launcher slurm", "Each job trains one run. SLURM signals it --signal-delay seconds before its --time "
        "limit (and a pre-emption signals the training): the training writes a checkpoint of its current step "
        "and exits with 75, submitit requeues the job, and the job resumes the run with --resume. Rerunning the "
        "command prints every run's state (finished, running / pending, failed with its log, interrupted, not "
        "submitted), resubmits failed and unsubmitted runs, never a run whose job is still queued or running, "
        "and writes the report of what has finished; --report-only submits nothing. Submitted jobs are kept in "
        "<output>/slurm_jobs.jsonl")
    slurm.add_argument("--time", metavar="LIMIT",
                       help="time limit of each job: minutes (90), H:MM:SS (24:00:00) or D-H:MM:SS (2-00:00:00); "
                            "needed to submit. A run longer than that is checkpointed and requeued")
    slurm.add_argument("--partition", metavar="NAME", help="SLURM partition (sbatch --partition)")
    slurm.add_argument("--account", metavar="NAME", help="SLURM account to charge (sbatch --account)")
    slurm.add_argument("--cpus-per-job", type=int, metavar="C",
                       help="CPUs of each job (sbatch --cpus-per-task; default: the cluster's)")
    slurm.add_argument("--sbatch", action="append", metavar="KEY=VALUE",
                       help="any other sbatch option, repeatable: --sbatch mem=64G --sbatch constraint=a100 "
                            "(submitit's additional_parameters)")
    slurm.add_argument("--signal-delay", type=int, metavar="S",
                       help="seconds before the time limit at which SLURM warns the job (SIGUSR2), leaving the "
                            "training that long to checkpoint (submitit's signal_delay_s; default: {})".format(
                                DEFAULT_SIGNAL_DELAY))
    slurm.add_argument("--max-timeouts", type=int, metavar="N",
                       help="how many times a job may reach its time limit and be requeued (submitit's "
                            "max_num_timeout; pre-emptions do not count; default: {}). After that the job ends "
                            "with its run interrupted, and the next run of this command resubmits it".format(
                                DEFAULT_MAX_TIMEOUTS))
    slurm.add_argument("--submitit-dir", metavar="DIR",
                       help="where submitit keeps its job files and logs, one folder per job (default: "
                            "<output>/submitit); on the cluster's shared file system")
    slurm.add_argument("--submitit-executor", choices=("slurm", "local"),
                       help="slurm (default): submit to SLURM; local: submitit's LocalExecutor, the same jobs as "
                            "processes of this machine, all started at once, with the same journal, time limit "
                            "and signal handling (to try the cluster path without a cluster)")
    slurm.add_argument("--wait", action="store_true",
                       help="after submitting, wait until every job has ended, then report; exit status 1 unless "
                            "every run finished")
    slurm.add_argument("--resubmit-unknown", action="store_true",
                       help="also resubmit runs whose job the scheduler has no record of (neither sacct nor "
                            "squeue knows it)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                   help="config overrides for every run; must come last")
    return p


#: Defaults of the SLURM options (kept here so that the help can name them without importing submitit).
DEFAULT_SIGNAL_DELAY = 90
DEFAULT_MAX_TIMEOUTS = 10
#: The options of ``--launcher slurm`` only (argparse dest, option).
SLURM_OPTIONS = (("time", "--time"), ("partition", "--partition"), ("account", "--account"),
                 ("cpus_per_job", "--cpus-per-job"), ("sbatch", "--sbatch"), ("signal_delay", "--signal-delay"),
                 ("max_timeouts", "--max-timeouts"), ("submitit_dir", "--submitit-dir"),
                 ("submitit_executor", "--submitit-executor"), ("wait", "--wait"),
                 ("resubmit_unknown", "--resubmit-unknown"))


def _fail(message):
    raise SystemExit("reproduce.py: error: " + message)


def _check_opts(opts):
    if len(opts) % 2:
        _fail("--opts takes KEY VALUE pairs, got an odd number of items: {}. Example: --opts SOLVER.MAX_EPOCH 60"
              .format(" ".join(opts)))
    for key in opts[::2]:
        if key in FORBIDDEN_OPTS:
            _fail("--opts may not set {}: the runner sets it for each run (OUTPUT_DIR = --output/<dataset>/<config>, "
                  "datasets with --datasets)".format(key))


def _projects_hint(args, path):
    """Why a config of the projects folder is missing, and what to pass instead."""
    where = os.path.abspath(args.projects)
    alternative = "" if args.preset else ", or --configs with the config files to train"
    return ("config file {!r} not found: {} uses the project configs in --projects {!r} ({}). Run the command "
            "from the root of a checkout of fastreid_ewth (which has projects/ and configs/), or pass "
            "--projects /path/to/fastreid_ewth/projects{}".format(
                path, "--preset " + args.preset if args.preset else "the paper's table (no --configs)",
                args.projects, where, alternative))


def build_specs(args):
    """The runs ``args`` ask for -> (list of :class:`RunSpec`, output folder, preset or None)."""
    preset = PRESETS[args.preset] if args.preset else None
    if preset and args.configs:
        _fail("--preset {} fixes the configs; drop --configs, or drop --preset to choose them".format(args.preset))
    opts = list(preset.opts if preset else ()) + list(args.opts or [])
    _check_opts(list(args.opts or []))
    if preset:
        configs = [(name, os.path.join(args.projects, path), tuple(extra)) for name, path, extra in preset.configs]
    elif args.configs:
        configs = [(os.path.splitext(os.path.basename(c))[0], c, ()) for c in args.configs]
    else:
        configs = [(name, os.path.join(args.projects, name + ".yml"), ()) for name in PAPER_CONFIGS]
    names = [name for name, _, _ in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        _fail("configs {} share a file name; each run's folder is named after it. Rename one copy".format(duplicates))
    for _, path, _ in configs:
        if os.path.isfile(path):
            continue
        if args.configs:
            _fail("config file {!r} not found; pass project configs such as projects/BoT_TH.yml (paths from the "
                  "current folder {!r})".format(path, os.getcwd()))
        _fail(_projects_hint(args, path))
    datasets = args.datasets or (preset.datasets if preset else PAPER_DATASETS)
    seeds = args.seeds or (preset.seeds if preset else None)
    output = args.output or (preset.output if preset else os.path.join("logs", "reproduce"))
    specs = []
    for dataset in datasets:
        for name, path, extra in configs:
            for seed in (seeds or (None,)):
                folder = name if seed is None else "{}-seed{}".format(name, seed)
                specs.append(RunSpec(name, path, dataset, os.path.join(output, dataset, folder),
                                     tuple(extra) + tuple(opts), seed))
    return specs, output, preset


def _baseline_groups(preset):
    """``((baseline, (config, ...)), ...)``: the preset's ``baselines``, or without them every config against
    the first."""
    names = [name for name, _, _ in preset.configs]
    if not preset.baselines:
        return ((names[0], tuple(names[1:])),)
    for base, compared in preset.baselines:
        unknown = [n for n in (base,) + tuple(compared) if n not in names]
        if unknown:
            raise ValueError("preset baselines name configs the preset does not have: {}".format(unknown))
    return tuple((base, tuple(compared)) for base, compared in preset.baselines)


def _paired_differences(results, preset):
    """Mean ± std over seeds of (config − its baseline), paired by seed, per dataset -> markdown lines.

    The baselines are the preset's ``baselines`` (each listed config against its group's baseline);
    a preset without them compares every config with its first.
    """
    groups = _baseline_groups(preset)
    if preset.baselines:
        intro = "Each config minus its group's baseline ({}; the `baseline` column)".format(
            ", ".join("`{}` for {} configs".format(base, len(compared)) for base, compared in groups))
    else:
        intro = "Each variant minus `{}`".format(groups[0][0])
    lines = [intro + ", paired by seed (a seed gives both runs the same initial weights and the same batches); "
             "mean ± std over the seeds both finished.", "",
             "| dataset | config | baseline | Δ mAP | Δ R1 | seeds |", "|---|---|---|---:|---:|---:|"]
    by_key = {(r.spec.dataset, r.spec.name, r.spec.seed): r for r in results if r.mAP is not None}
    for dataset in dict.fromkeys(r.spec.dataset for r in results):
        for base, compared in groups:
            for name in compared:
                pairs = [(by_key[(dataset, name, s)], by_key[(dataset, base, s)]) for s in _seeds(results)
                         if (dataset, name, s) in by_key and (dataset, base, s) in by_key]
                cells = []
                for attr in ("mAP", "rank1"):
                    diffs = [getattr(a, attr) - getattr(b, attr) for a, b in pairs]
                    if not diffs:
                        cells.append("–")
                    elif len(diffs) == 1:
                        cells.append("{:+.1f}".format(diffs[0]))
                    else:
                        cells.append("{:+.1f} ± {:.1f}".format(statistics.fmean(diffs), statistics.stdev(diffs)))
                lines.append("| {} | `{}` | `{}` | {} | {} | {} |".format(dataset, name, base, cells[0], cells[1],
                                                                     len(pairs)))
    return lines


def _seeds(results):
    return list(dict.fromkeys(r.spec.seed for r in results))


def make_report(specs, output, preset=None):
    """Collect, plot and write the report of ``specs`` into ``output`` -> (rows, results)."""
    from .plots import plot_run_curves, plot_summary
    from .report import aggregate

    results = collect(specs)
    rows = aggregate(results)
    os.makedirs(output, exist_ok=True)
    plots = {"summary": "map_vs_paper.png", "curves": []}
    plot_summary(rows, os.path.join(output, plots["summary"]))
    for r in results:
        records = run_records(r.spec)
        if not records:
            continue
        folder = os.path.basename(os.path.normpath(r.spec.output_dir))
        rel = os.path.join("curves", r.spec.dataset, folder + ".png")
        plot_run_curves(records, r.spec.output_dir, r.spec.dataset, "{} — {}".format(r.spec.label, r.state),
                        os.path.join(output, rel))
        plots["curves"].append(rel)
    notes = []
    extra = []
    if preset is not None:
        notes.append(preset.note)
        if len(preset.configs) > 1:
            extra.append(("Paired differences", _paired_differences(results, preset)))
    common = _common_opts(specs)
    if common:
        notes.append("Overrides passed to every run: `{}`.".format(" ".join(common)))
    if preset is not None:
        title = preset.title
    elif all(s.name in PAPER_CONFIGS and s.name == _stem(s.config_file) for s in specs):
        title = "Reproduction of the paper's table"
    else:
        title = "Measured vs published results"
    write_report(results, output, title=title,
                 notes=notes, plots=plots, extra_sections=extra)
    return rows, results


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def _common_opts(specs):
    if not specs:
        return []
    first = list(specs[0].opts)
    pairs = [first[i:i + 2] for i in range(0, len(first), 2)]
    shared = [p for p in pairs if all(_has_pair(s.opts, p) for s in specs)]
    return [item for pair in shared for item in pair]


def _has_pair(opts, pair):
    opts = list(opts)
    return any(opts[i:i + 2] == pair for i in range(0, len(opts), 2))


def _thread_env(jobs):
    """Environment of the training processes: with several at once, split the cores between them.

    Several processes each running one intra-op thread per core oversubscribe the CPU; on a busy 2-core
    machine that made one training step 2-3 times slower than with one thread.
    """
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def _gpu_groups(jobs, gpus_per_job):
    """``jobs`` disjoint groups of ``gpus_per_job`` GPUs (``CUDA_VISIBLE_DEVICES`` entries) from the GPUs
    this process sees, or exit with what is missing."""
    gpus = visible_gpus()
    needed = jobs * gpus_per_job
    if needed > len(gpus):
        where = ("CUDA_VISIBLE_DEVICES={}".format(os.environ["CUDA_VISIBLE_DEVICES"])
                 if "CUDA_VISIBLE_DEVICES" in os.environ else "torch.cuda.device_count()")
        _fail("--jobs {} × --gpus-per-job {} needs {} GPUs, but there are {} ({}: {}). Lower --jobs or "
              "--gpus-per-job, or set CUDA_VISIBLE_DEVICES to the GPUs to use".format(
                  jobs, gpus_per_job, needed, len(gpus), where, ",".join(gpus) or "none"))
    return [gpus[i * gpus_per_job:(i + 1) * gpus_per_job] for i in range(jobs)]


def _run_all(specs, num_gpus, jobs, verbose, echo, python=None, gpu_groups=None):
    """Train every unfinished run, ``jobs`` at a time -> list of the specs that failed.

    ``gpu_groups`` (``jobs`` lists of ``CUDA_VISIBLE_DEVICES`` entries): each training takes a free group for
    its ``CUDA_VISIBLE_DEVICES`` and gives it back when it ends; ``None`` leaves the environment's.
    """
    env = _thread_env(jobs)
    lock = threading.Lock()
    free = None
    if gpu_groups:
        free = queue.Queue()
        for group in gpu_groups:
            free.put(group)

    def say(message):
        with lock:  # whole lines from concurrent runs
            echo(message)

    def one(numbered):
        i, spec = numbered
        state = run_state(spec.output_dir)
        say("[{}/{}] {}: {}".format(i, len(specs), spec.label, {
            "finished": "finished, skipped", "unmarked": "trained to the end without a marker, adopted",
            "running": "still training in another process, skipped", "interrupted": "interrupted, resuming",
            "fresh": "starting"}[state]))
        if state in ("finished", "running"):
            return None
        group = None if free is None or state == "unmarked" else free.get()
        try:
            run_env = env
            if group is not None:
                run_env = dict(env, CUDA_VISIBLE_DEVICES=",".join(group))
                say("[{}/{}] {}: on GPUs {} (CUDA_VISIBLE_DEVICES)".format(i, len(specs), spec.label,
                                                                           ",".join(group)))
            _, code = train_run(spec, num_gpus=num_gpus, verbose=verbose, env=run_env, python=python, echo=say)
        finally:
            if group is not None:
                free.put(group)
        if code != 0:
            say("[{}/{}] {}: FAILED with exit code {}; last lines of its output:\n{}".format(
                i, len(specs), spec.label, code, stdout_tail(spec)))
            return spec
        say("[{}/{}] {}: done".format(i, len(specs), spec.label))
        return None

    numbered = list(enumerate(specs, 1))
    if jobs == 1:
        outcomes = [one(n) for n in numbered]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            outcomes = list(pool.map(one, numbered))
    return [spec for spec in outcomes if spec is not None]


def _gpu_options(args):
    """``--num-gpus`` and ``--gpus-per-job`` checked against each other -> (num_gpus of each training,
    gpus_per_job or None)."""
    if args.num_gpus is not None and args.num_gpus < 1:
        _fail("--num-gpus must be >= 1, got {}".format(args.num_gpus))
    if args.gpus_per_job is None:
        return (1 if args.num_gpus is None else args.num_gpus), None
    if args.gpus_per_job < 1:
        _fail("--gpus-per-job must be >= 1, got {}".format(args.gpus_per_job))
    if args.num_gpus is not None and args.num_gpus != args.gpus_per_job:
        _fail("--num-gpus {} contradicts --gpus-per-job {}: each training uses the GPUs of its job "
              "(--num-gpus G). Pass one of them".format(args.num_gpus, args.gpus_per_job))
    return args.gpus_per_job, args.gpus_per_job


def _check_launcher_options(args):
    if args.launcher == "slurm":
        if args.jobs is not None:
            _fail("--jobs is for --launcher local; with --launcher slurm every run is a job of its own, run as "
                  "the cluster allows. Drop --jobs")
        return
    given = [option for dest, option in SLURM_OPTIONS if getattr(args, dest) not in (None, False)]
    if given:
        _fail("{} {} only with --launcher slurm. Add --launcher slurm (--submitit-executor local tries it on "
              "this machine), or drop {}".format(", ".join(given), "works" if len(given) == 1 else "work",
                                                 "it" if len(given) == 1 else "them"))


def _slurm_journal():
    from .slurm import JOURNAL

    return JOURNAL


def print_report(specs, output, preset, echo):
    """Write the report of ``specs`` (``make_report``) and print its tables."""
    make_report(specs, output, preset)
    echo("")
    with open(os.path.join(output, "REPORT.md")) as f:
        report = f.read()
    echo(report.split("## Plots")[0].rstrip())
    echo("\nwritten: {} (and report.csv, runs.csv, map_vs_paper.png, curves/)".format(
        os.path.join(output, "REPORT.md")))


def main(argv=None, echo=print, python=None, prog="tools/reproduce.py"):
    """Entry point; returns the process exit code (1 when a run failed).

    ``python``: the interpreter of the trainings (default: this one, ``sys.executable``).
    """
    args = build_parser(prog).parse_args(argv)
    num_gpus, gpus_per_job = _gpu_options(args)
    _check_launcher_options(args)
    specs, output, preset = build_specs(args)

    if args.launcher == "slurm":
        from . import slurm  # submitit only for this launcher

        return slurm.main(args, specs, output, preset, num_gpus=num_gpus, echo=echo, python=python,
                          report=print_report)

    if args.dry_run:
        for spec in specs:
            state = run_state(spec.output_dir)
            if state in ("finished", "unmarked", "running"):
                echo("# {}: {}, skipped".format(spec.label, state))
                continue
            echo(format_command(train_command(spec, num_gpus, resume=state == "interrupted", python=python)))
        return 0

    failed = []
    if not args.report_only:
        jobs = args.jobs or (preset.jobs if preset else 1)
        if jobs < 1:
            _fail("--jobs must be >= 1, got {}".format(jobs))
        groups = _gpu_groups(jobs, gpus_per_job) if gpus_per_job else None
        failed = _run_all(specs, num_gpus, jobs, args.verbose, echo, python=python, gpu_groups=groups)
    elif os.path.isfile(os.path.join(output, _slurm_journal())):
        echo("Runs of this output folder were submitted with --launcher slurm: add --launcher slurm to see "
             "their jobs' states.")

    print_report(specs, output, preset, echo)
    if failed:
        echo("{} run(s) failed: {}. Rerun the same command to retry them (finished runs are skipped).".format(
            len(failed), ", ".join(s.label for s in failed)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
