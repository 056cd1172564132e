"""How many CPU threads vpcli's computations use (`--threads N`, `VPCLI_THREADS`).

Torch's default -- one intra-op thread per core, spinning while it waits -- collapses as soon as
anything else runs on the machine, vpcli's own parallel shards included (issue 14: two
`--shard` processes on 2 cores ran 9.4x slower than with one thread each). vpcli therefore picks
its own count, in this order:

1. ``--threads N`` (anywhere on the command line);
2. ``VPCLI_THREADS=N`` in the environment;
3. ``OMP_NUM_THREADS`` when the user set it;
4. the CPU cores this process may run on (its affinity mask) divided by the number of shards
   (``--shard K/N`` runs N processes side by side), and at most the cores that other work is not
   using right now (the kernel's count of runnable tasks, ``/proc/loadavg``, least of a few
   samples over ~20 ms), at least 1.

Why the last rule: two threads on 2 cores with one unrelated busy process (even at ``nice 10``:
with the kernel's autogroups, nice does not reach across sessions) ran `vpcli predict` 20x
slower than one thread (61.0 s against 3.1 s for the quick start's prediction, this machine,
AVX512): every parallel region waits for the thread that shares its core. One thread too few
costs at most the second core (1.19x in ``benchmarks/bench_threads.py``); one too many, 20x.

Inter-op parallelism is kept at one thread. ``configure()`` applies the count to torch (and to
OpenCV when it is loaded); the CLI calls it before any command runs, library users may call it.
"""
from __future__ import annotations

import os
import re
import sys

from vpcli.errors import UsageError

ENV = "VPCLI_THREADS"


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def busy_cores(samples: int = 4, interval_s: float = 0.005) -> int:
    """Cores that other work keeps busy now: the runnable tasks the kernel counts in
    ``/proc/loadavg`` (field 4, ``running/total``), less this process, least of ``samples`` reads
    ``interval_s`` apart (a task that runs for a moment is not load). 0 where it cannot be read."""
    import time
    least = None
    for k in range(samples):
        try:
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0
        least = running if least is None else min(least, running)
        if k + 1 < samples:
            time.sleep(interval_s)
    return max(0, (least or 1) - 1)  # this process is one of the runnable tasks


def _positive(text: str, what: str) -> int:
    try:
        n = int(text)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise UsageError(f"{what} must be an integer >= 1, got {text!r}",
                         "e.g. --threads 1 (or VPCLI_THREADS=1); the default divides the cores among shards")
    return n


def choose(threads: str | int | None = None, shards: int = 1) -> tuple[int, str]:
    """The thread count and where it came from (``--threads``, ``VPCLI_THREADS``, ``OMP_NUM_THREADS``
    or ``default``)."""
    if threads is not None:
        return _positive(str(threads), "--threads"), "--threads"
    if os.environ.get(ENV):
        return _positive(os.environ[ENV], ENV), ENV
    if os.environ.get("OMP_NUM_THREADS"):
        return _positive(os.environ["OMP_NUM_THREADS"], "OMP_NUM_THREADS"), "OMP_NUM_THREADS"
    cores = available_cores()
    share = max(1, cores // max(1, shards))
    free = max(1, cores - busy_cores())
    if free < share:
        return free, f"default ({cores} cores, {cores - free} busy with other work)"
    return share, "default"


def from_argv(argv: list[str]) -> tuple[list[str], str | None, int]:
    """Take ``--threads N`` / ``--threads=N`` out of ``argv``; -> (argv, threads, shards from --shard K/N)."""
    out, threads, shards = [], None, 1
    it = iter(range(len(argv)))
    skip = False
    for i in it:
        a = argv[i]
        if skip:
            skip = False
            continue
        if a == "--threads":
            if i + 1 >= len(argv):
                raise UsageError("--threads needs a value", "e.g. --threads 1")
            threads, skip = argv[i + 1], True
            continue
        if a.startswith("--threads="):
            threads = a.split("=", 1)[1]
            continue
        m = re.fullmatch(r"(\d+)/(\d+)", argv[i + 1]) if a == "--shard" and i + 1 < len(argv) else None
        if m:
            shards = max(1, int(m.group(2)))
        elif a.startswith("--shard="):
            m = re.fullmatch(r"\d+/(\d+)", a.split("=", 1)[1])
            shards = max(1, int(m.group(1))) if m else shards
        out.append(a)
    return out, threads, shards


_chosen: int | None = None  # what configure() decided for this process


def configure(n: int, *, explicit: bool = True) -> None:
    """Use ``n`` intra-op threads (and one inter-op thread) from now on, in this process and the
    processes it starts (data loader workers and torchrun children read ``OMP_NUM_THREADS``).

    A default (``explicit=False``) is not forced on a process that imported torch before vpcli ran
    (a library user or a test that set its own count keeps it)."""
    global _chosen
    if not explicit and "torch" in sys.modules:
        return
    _chosen = n
    if explicit or not os.environ.get("OMP_NUM_THREADS"):
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        _torch(n)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(n)


def _torch(n: int) -> None:
    import torch
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # inter-op work already ran in this process: the count is fixed
        pass


def apply_to_torch() -> None:
    """Called by the engines once torch is needed: apply the count ``configure`` chose (if any)."""
    if _chosen is not None:
        _torch(_chosen)
