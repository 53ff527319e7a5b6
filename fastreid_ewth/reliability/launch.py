"""Start a (multi-)process run: fastreid's ``launch`` (NCCL) on GPUs, the same on CPU with gloo.

fastreid's ``launch`` spawns one process per GPU and joins them with NCCL; its worker asserts that CUDA
is there. On a machine without CUDA, ``launch`` here spawns the processes itself, joins them with gloo
and sets up fastreid's per-machine process group exactly as fastreid's worker does, so ``fastreid.utils.comm``
(ranks, gathering metrics to rank 0, synchronising) and the trainer work unchanged. With either, a stop signal
to the launching process reaches every training process, and the launcher exits with their
``EXIT_INTERRUPTED`` when they stop with a checkpoint (``preempt``).
"""
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastreid.engine import launch as fastreid_launch
from fastreid.utils import comm

from .. import compat
from .preempt import EXIT_INTERRUPTED, TrainingInterrupted, forwarding_stop_signals

logger = logging.getLogger(__name__)

__all__ = ["launch", "default_backend"]


def default_backend():
    """``"nccl"`` when CUDA is available, else ``"gloo"``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def _free_local_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(main_func, num_processes, num_machines=1, machine_rank=0, dist_url=None, args=(), backend=None):
    """Run ``main_func(*args)`` in ``num_processes`` processes on each of ``num_machines`` machines.

    ``num_processes`` is ``--num-gpus``: GPUs per machine with NCCL, CPU processes per machine with gloo.
    One process in total runs ``main_func`` here, without ``torch.distributed``. ``dist_url`` is the
    rendezvous (``tcp://HOST:PORT``; ``"auto"`` picks a free local port, one machine only). ``backend``
    defaults to ``default_backend()``.
    """
    backend = (backend or default_backend()).lower()
    if backend == "nccl":
        if num_processes * num_machines == 1:
            return main_func(*args)
        with _stopping_with_the_children():
            return fastreid_launch(main_func, num_processes, num_machines=num_machines, machine_rank=machine_rank,
                                   dist_url=dist_url, args=args)
    if backend != "gloo":
        raise ValueError("backend {!r} is not supported: use 'nccl' (GPUs) or 'gloo' (CPU)".format(backend))
    if num_processes < 1 or num_machines < 1:
        raise ValueError("--num-gpus {} and --num-machines {} must be >= 1".format(num_processes, num_machines))
    world_size = num_machines * num_processes
    if world_size == 1:
        return main_func(*args)
    if dist_url is None or dist_url == "auto":
        if num_machines > 1:
            raise ValueError("--dist-url auto only works on one machine; pass tcp://HOST:PORT of machine 0")
        dist_url = "tcp://127.0.0.1:{}".format(_free_local_port())
    with _stopping_with_the_children():
        mp.spawn(_gloo_worker, nprocs=num_processes, daemon=False,
                 args=(main_func, world_size, num_processes, machine_rank, dist_url, args,
                       multiprocessing.get_start_method(), os.getpid()))


@contextlib.contextmanager
def _stopping_with_the_children():
    """While the processes of a run train: a stop signal to this process goes on to them, and their exit
    after one (``EXIT_INTERRUPTED``, with the checkpoint written) is this process's exit too."""
    try:
        with forwarding_stop_signals():
            yield
    except mp.ProcessExitedException as e:
        if e.exit_code != EXIT_INTERRUPTED:
            raise
        raise TrainingInterrupted("a stop signal") from None


def _end_with_launcher(launcher_pid):
    """On Linux, have the kernel send SIGTERM to this process when the launcher dies.

    A launcher killed with SIGKILL (a pre-empted job, ``kill -9``) cannot stop its children; they would go on
    training without it, writing checkpoints into the OUTPUT_DIR that a ``--resume`` of the same run writes to.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1  # from <sys/prctl.h>
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != launcher_pid:  # it died before the request took effect
        os._exit(1)


def _gloo_worker(local_rank, main_func, world_size, num_processes, machine_rank, dist_url, args, start_method,
                 launcher_pid):
    _end_with_launcher(launcher_pid)
    rank = machine_rank * num_processes + local_rank
    # a process made by mp.spawn has "spawn" as its default start method, so each DataLoader worker would be
    # a fresh interpreter importing torch and fastreid again (a minute per evaluation on a 2-core machine);
    # the loader workers start as they do in a single-process run (fork on Linux)
    multiprocessing.set_start_method(start_method, force=True)
    if "OMP_NUM_THREADS" not in os.environ:
        # N processes with one intra-op thread per core each would oversubscribe the machine N times
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_processes))
    try:
        dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size, rank=rank)
    except Exception:
        logger.error("Could not join the process group at %s (rank %d of %d)", dist_url, rank, world_size)
        raise
    comm.synchronize()
    # fastreid's comm.get_local_rank()/get_local_size() read this group of the processes on this machine;
    # every process must create every machine's group, in the same order
    num_machines = world_size // num_processes
    for machine in range(num_machines):
        group = dist.new_group(list(range(machine * num_processes, (machine + 1) * num_processes)))
        if machine == machine_rank:
            compat.set_local_process_group(group)
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
