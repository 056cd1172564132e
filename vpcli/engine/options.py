"""The options every folder command shares (DESIGN.md, CLI: ``--shard``, ``--recursive``,
``--overwrite``, ``--batch-size``, ``--device``, ``--seed`` behave the same in every subcommand).

Each command's options class (``SegmentOptions``, ``FlowOptions``, ``ConvertOptions``) extends
one of these, is keyword-only and frozen, and checks its values on construction. The checks
that commands without a shared base need too (``EvalOptions``, ``TrainOptions``) are the
functions here: :func:`check_device`, :func:`check_output_folder` and :func:`check_memory`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vpcli.errors import UsageError
from vpcli.io.sources import check_positive_int, parse_shard

# cpu, cuda, cuda:N, mps, xpu, xpu:N: the device kinds vpcli runs on (torch.device spells them so).
_DEVICE_RE = re.compile(r"(cpu|cuda|mps|xpu)(?::(\d+))?")
_DEVICE_HINT = "use --device cpu, cuda or cuda:N"


def check_device(device: object, option: str = "--device") -> object:
    """``device`` (returned as given) if this machine can run on it, else a UsageError (exit 2).

    Checked when the options are built, before any weights, data or output is touched. ``cpu``
    needs no torch import (commands that never use torch stay fast); other kinds ask torch
    whether the device exists: CUDA built and present, the index below the device count. A
    ``torch.device`` from library code is checked by its name.
    """
    name = str(device) if type(device).__name__ == "device" else device
    m = _DEVICE_RE.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise UsageError(f"{option} {device!r} is not a device", _DEVICE_HINT)
    kind, index = m[1], None if m[2] is None else int(m[2])
    if kind == "cpu":
        return device
    import torch
    if kind == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise UsageError(f"{option} {name}: CUDA is not available ({why})", "use --device cpu")
        count = torch.cuda.device_count()
        if index is not None and index >= count:
            raise UsageError(f"{option} {name}: this machine has {count} CUDA device{'s' * (count != 1)}",
                             f"use cuda:0 .. cuda:{count - 1}, or --device cpu")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{option} {name}: Apple MPS is not available on this machine", "use --device cpu")
    elif kind == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise UsageError(f"{option} {name}: no Intel XPU is available on this machine", "use --device cpu")
    return device


def check_output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse an output folder that is a file or lies under one (a usage error, exit 2): found
    when the options are built, so the command fails before any work, the same way everywhere."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        where = "is a file" if blocker == path else f"is inside {blocker}, which is a file"
        raise UsageError(f"{option} {path} {where}; an output folder is needed",
                         f"give {option} a folder, or a path where one can be created")
    return path


# --------------------------------------------------------------------------------------------
# Memory: refuse a request that cannot fit before allocating it (the kernel's OOM killer gives
# no message and leaves the half-written temporaries of the killed process behind).

MEMORY_ENV = "VPCLI_MEMORY_LIMIT"  # overrides what is free: 4G, 512M, bytes; none = no check
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def parse_bytes(text: str) -> int | None:
    """``4G`` / ``512M`` / ``1.5G`` / ``2GiB`` / ``123456`` -> bytes; ``none`` / ``off`` -> None (no limit)."""
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    if s in ("NONE", "OFF", "0"):
        return None
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([KMGT]?)", s)
    if not m:
        raise UsageError(f"{MEMORY_ENV}={text!r} is not a size", "write it like 4G, 512M or a number of bytes, or none")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_available() -> int | None:
    """What the memory cgroup still allows (limit minus usage not counting reclaimable cache)."""
    for limit_f, usage_f, stat_f, cache_key in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat",
             "inactive_file"),  # cgroup v2
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
             "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file")):  # cgroup v1
        limit, usage = _read_int(limit_f), _read_int(usage_f)
        if limit is None or usage is None or limit >= 1 << 60:  # "max" or v1's "unlimited"
            continue
        cache = 0
        try:
            for line in Path(stat_f).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == cache_key and value.strip().isdigit():
                    cache = int(value)
        except OSError:
            pass
        return max(0, limit - usage + cache)
    return None


def available_memory(device: str = "cpu") -> int | None:
    """Bytes that ``device`` can still allocate (None when it cannot be told, or ``VPCLI_MEMORY_LIMIT``
    is ``none``); ``VPCLI_MEMORY_LIMIT`` replaces the figure when set."""
    if MEMORY_ENV in os.environ:
        return parse_bytes(os.environ[MEMORY_ENV])
    kind = device.split(":")[0]
    if kind == "cuda":
        import torch
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    if kind != "cpu":
        return None
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    cgroup = _cgroup_available()
    if cgroup is not None:
        found.append(cgroup)
    return min(found) if found else None


def gib(n: float) -> str:
    """Bytes as ``1.5 GiB``, or ``300 MiB`` below a GiB (where one decimal of GiB says nothing)."""
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def check_memory(need: int, device: str, what: str, hint: str) -> None:
    """UsageError (exit 2) when ``need`` bytes on ``device`` exceed what it has free now.

    ``need`` is an estimate of the peak (measured per pixel for each model, see the callers), so
    only requests that clearly cannot fit are refused; ``what`` says what needs it.
    """
    have = available_memory(device)
    if have is not None and need > have:
        raise UsageError(f"{what} needs about {gib(need)} of memory on {device}, but only {gib(have)} is free",
                         hint)


@dataclass(frozen=True, kw_only=True)
class InputOptions:
    """Which inputs to take and whether existing outputs may be replaced.

    ``shard`` may be given as ``"K/N"``; it is stored as the pair ``(K, N)``.
    """

    shard: tuple[int, int] | None = None
    recursive: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "shard", parse_shard(self.shard))  # frozen: normalise once, here


@dataclass(frozen=True, kw_only=True)
class DeviceOptions(InputOptions):
    """:class:`InputOptions` plus where and how a model runs (the device checked up front)."""

    batch_size: int = 8
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.batch_size, "--batch-size")
        check_device(self.device)


def check_model_overrides(values) -> tuple[str, ...]:
    """``--set model.KEY=VALUE`` for predict and eval: inference-time settings of the weights'
    model config (e.g. ``model.batchnorm=eval`` for the SLAMP authors' checkpoints). Only
    ``model.`` keys: the data a model was trained on is not a setting of a prediction."""
    out = tuple(values or ())
    for v in out:
        key, eq, _ = str(v).partition("=")
        if not eq or not key.startswith("model.") or key == "model.":
            raise UsageError(f"--set takes model.KEY=VALUE here, got {v!r}",
                             "e.g. --set model.batchnorm=eval (sizes and context have their own options)")
    return out

