"""What the benchmark scripts share: run named measurements in order, print each as one JSON line,
and optionally write them all to a JSON file."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def run_named(cases: Iterable[tuple[str, Callable[[], dict]]], json_path: str | None = None,
              res: dict | None = None) -> dict:
    """``res`` (e.g. the machine's description) is extended and returned."""
    res = {} if res is None else res
    for name, fn in cases:
        res[name] = fn()
        print(name, json.dumps(res[name]), flush=True)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(res, f, indent=2)
    return res


def interleaved(cases: dict[str, Callable[[], object]], repeats: int, *, warmup: bool = False,
                rotate: bool = False) -> dict[str, list[float]]:
    """``{name: fn}`` -> ``{name: [seconds per round]}``: every case once per round, ``repeats``
    rounds, so that a busy machine slows all cases alike (compare medians, or per-round ratios).
    ``warmup`` runs each case once, untimed, first; ``rotate`` starts each round at the next case,
    so that no case always runs right after another (caches, turbo, other users)."""
    if warmup:
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)] if rotate else names
        for name in order:
            t = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """``{name: [seconds]}`` -> ``{name: median seconds}``."""
    return {name: statistics.median(ts) for name, ts in times.items()}


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` calls, seconds (the least disturbed by other work)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bf16_flags() -> list[str]:
    """The CPU's bf16 / AMX feature flags (Linux /proc/cpuinfo; empty elsewhere or when none)."""
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return sorted(words & {"avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"})


def machine_info() -> dict:
    """Python, torch, threads, the CPU capability torch dispatches to and its bf16 flags."""
    import torch
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16_flags": bf16_flags(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
