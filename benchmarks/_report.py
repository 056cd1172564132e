"""What the benchmark scripts share: run named measurements in order, print each as one JSON line,
and optionally write them all to a JSON file."""
from __future__ import annotations

import json
import os
import platform
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
