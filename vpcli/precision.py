"""bf16 or fp32, chosen per machine: ``auto`` (``train.amp: auto``, ``--precision auto``).

bf16 autocast helps only where the CPU runs bf16 natively. On one machine of this project (AVX-512
with AMX) a CPU-budget SLAMP training step took 1.59 s in bf16 against 2.53 s in fp32; on an
AVX2-only one, a paper-size step at batch 4 took 137.8 s in bf16 against 6.8 s in fp32 (20x
slower), because autocast sends the convolutions to ``aten::_slow_conv2d_*`` (issue 20). So:

* ``auto`` uses bf16 only when :func:`bf16_is_fast` says so: the CPU reports AVX-512
  (``torch.backends.cpu.get_cpu_capability()``) *and* a one-off micro-benchmark -- a small
  convolution and matmul, fp32 against bf16 autocast -- finds bf16 at least 10% faster. The
  verdict is cached per CPU model, capability, torch version and thread count in
  ``$VPCLI_CACHE/precision.json`` (the benchmark takes about a second, once). CUDA: bf16 when
  ``torch.cuda.is_bf16_supported()``.
* an explicit ``bf16`` where it is slow still runs in bf16, with one warning line that says why
  and what to pass instead.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

PRECISIONS = ("fp32", "bf16", "auto")
SPEEDUP_NEEDED = 1.10  # bf16 must be at least this much faster to be chosen


def _cache_file() -> Path:
    from vpcli.weights.hashing import vpcli_cache_dir  # the one definition of vpcli's cache folder
    return vpcli_cache_dir() / "precision.json"


def _cpu_key() -> str:
    import torch
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{model}|{torch.backends.cpu.get_cpu_capability()}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def _median_time(fn, reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def measure_bf16_speedup() -> float:
    """fp32 time / bf16-autocast time of a small conv + matmul workload on the CPU (> 1: bf16 faster)."""
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 32, 32, 32, generator=g)
    w = torch.randn(64, 32, 3, 3, generator=g)
    a, b = torch.randn(256, 512, generator=g), torch.randn(512, 256, generator=g)

    def work():
        with torch.inference_mode():
            F.conv2d(x, w, padding=1).relu_()
            a @ b

    def work_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            work()

    work(), work_bf16()  # warm up (kernel selection, allocation)
    return _median_time(work) / max(_median_time(work_bf16), 1e-9)


def bf16_is_fast(device: str = "cpu") -> tuple[bool, str]:
    """Whether bf16 autocast pays off on ``device``, and one sentence saying why."""
    import torch
    dev = torch.device(device)
    if dev.type == "cuda":
        ok = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        return ok, "the GPU supports bf16" if ok else "the GPU has no bf16"
    if dev.type != "cpu":
        return False, f"no bf16 check for {dev.type}"
    capability = torch.backends.cpu.get_cpu_capability()
    if "AVX512" not in capability:
        return False, (f"this CPU reports {capability}, without AVX-512: bf16 convolutions fall back to slow "
                       "kernels (20x slower measured on an AVX2 machine)")
    key = _cpu_key()
    path = _cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    speedup = cache.get(key)
    if not isinstance(speedup, (int, float)):
        speedup = measure_bf16_speedup()
        cache[key] = round(float(speedup), 3)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            os.replace(tmp, path)  # atomic: two processes measuring at once both leave a whole file
        except OSError:
            pass  # an unwritable cache only costs the benchmark next time
    ok = speedup >= SPEEDUP_NEEDED
    return ok, (f"{capability}; a bf16 micro-benchmark ran x{speedup:.2f} the fp32 speed "
                f"({'at least' if ok else 'below'} x{SPEEDUP_NEEDED:.2f})")


def resolve(requested: str, device: str = "cpu", *, what: str = "--precision",
            instead: str = "--precision auto or fp32") -> tuple[str, str | None]:
    """``fp32`` | ``bf16`` | ``auto`` -> (the precision to run, a warning line or None; ``instead``
    names what to pass in the warning)."""
    from vpcli.errors import UsageError
    if requested not in PRECISIONS:
        raise UsageError(f"{what} must be one of {', '.join(PRECISIONS)}, got {requested!r}",
                         "auto picks bf16 where this machine runs it fast, else fp32")
    if requested == "fp32":
        return "fp32", None
    fast, why = bf16_is_fast(device)
    if requested == "auto":
        return ("bf16" if fast else "fp32"), None
    if fast:
        return "bf16", None
    return "bf16", f"{what} bf16 on this machine is likely slower than fp32 ({why}); pass {instead}"


__all__ = ["PRECISIONS", "bf16_is_fast", "measure_bf16_speedup", "resolve"]
