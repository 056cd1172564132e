"""`vpcli predict`'s memory check (vpcli/engine/memory.py) against what the process really uses.

For each bundled fully convolutional predictor (hvp-synthstreet, sadm-synthstreet), on one
synth-street sequence of 512x1024 (companion labels and flow), `vpcli predict --horizon H` runs
in a fresh subprocess at ``--size 128x256`` (outputs still written at 512x1024: the same encoder
streams), at the clip's own 512x1024, and at 512x1024 with ``--samples 3``, each under its own
wrapper (peak RSS of the child, ru_maxrss). The estimates are read from each run's meta.json
(``memory_check``: tensors probed at about 128x128 and scaled, plus the H.264 streams); a run too
small to be probed gets the 512x1024 estimate less its tensors' growth. Claim checked: each
estimated growth (128x256 -> 512x1024; 1 -> 3 samples) is within 25% of the measured growth of
peak RSS (the check plans with 80% of the budget). With H >= 25 the encoders' look-ahead is full.
Then the refusal: the 512x1024 run under ``VPCLI_MEMORY_LIMIT=200M``, its exit code and seconds
(load + probe, nothing decoded).

Run:  python benchmarks/bench_memory_check.py [--threads 1] [--horizon 3] [--weights NAME...] [--json out.json]
"""
from __future__ import annotations

from _report import machine_info, run_named  # noqa: E402  (benchmarks/, beside this script)
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_hvp import cli, run_rss  # noqa: E402

CASES = (("hvp-synthstreet", ("--labels-from", "companion")),
         ("sadm-synthstreet", ("--labels-from", "companion", "--flow-from", "companion")))


def bench(weights: str, extra: tuple[str, ...], clip: Path, tmp: Path, threads: int, horizon: int) -> dict:
    def predict(tag: str, *args: str, limit: str = "64G") -> dict:
        out = tmp / f"{weights}_{tag}"
        cmd = cli("predict", str(clip), "--weights", weights, "--horizon", str(horizon), "--out", str(out),
                  "--threads", str(threads), *extra, *args)
        res = run_rss(cmd, threads, {"VPCLI_MEMORY_LIMIT": limit})
        meta = out / clip.name / "meta.json"
        check = json.loads(meta.read_text())["memory_check"] if meta.exists() else None
        return {"rc": res["rc"], "peak_rss_mb": res["maxrss_kib"] / 1024, "seconds": res["seconds"],
                "memory_check": check, "stderr_tail": res["stderr_tail"][-400:]}

    small = predict("small", "--size", "128x256")      # outputs still at 512x1024: its encoders are the big run's
    big1 = predict("native")
    big3 = predict("native_s3", "--samples", "3")
    c1, c3 = big1["memory_check"], big3["memory_check"]
    cs = small["memory_check"]
    if isinstance(cs, dict) and "estimate_bytes" in cs:  # probed (its streams at 512x1024 are the big run's)
        est_small = cs["estimate_bytes"]
    else:  # not probed: the big run's estimate less its tensors' growth from 128x256 (the same streams)
        est_small = c1["estimate_bytes"] - c1["bytes_per_pixel"] * (512 * 1024 - 128 * 256)
    rows = []
    for name, lo, hi, est_lo, est_hi in (("128x256 -> 512x1024, 1 sample", small, big1, est_small, c1["estimate_bytes"]),
                                         ("1 -> 3 samples at 512x1024", big1, big3, c1["estimate_bytes"],
                                          c3["estimate_bytes"])):
        measured = hi["peak_rss_mb"] - lo["peak_rss_mb"]
        estimated = (est_hi - est_lo) / 2 ** 20
        rows.append({"growth": name, "measured_rss_growth_mb": measured, "estimated_growth_mb": estimated,
                     "estimated_over_measured": estimated / measured,
                     "within_25pct": abs(estimated / measured - 1) <= 0.25})
    runs = {k: {"peak_rss_mb": v["peak_rss_mb"], "seconds": v["seconds"],
                "estimate_mb": None if v["memory_check"] is None or isinstance(v["memory_check"], str)
                else v["memory_check"]["estimate_bytes"] / 2 ** 20}
            for k, v in (("128x256", small), ("512x1024", big1), ("512x1024_s3", big3))}
    refused = predict("refused", limit="200M")
    return {"weights": weights, "runs": runs, "growth": rows,
            "refusal_200M": {"rc": refused["rc"], "seconds": refused["seconds"],
                             "message": refused["stderr_tail"].strip().splitlines()[-2:]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--horizon", type=int, default=3, help="predicted frames (the encoders fill after ~25)")
    ap.add_argument("--weights", nargs="*", default=[w for w, _ in CASES], help="a subset of the cases")
    args = ap.parse_args(argv)
    res = {"machine": machine_info()}
    print(json.dumps(res["machine"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as d:
        tmp = Path(d)
        subprocess.run(cli("data", "synth-street", "--out", str(tmp / "clip"), "--num", "1", "--length", "8",
                           "--size", "512x1024", "--seed", "7"), check=True, capture_output=True, cwd=ROOT)
        clip = tmp / "clip" / "seq_00000"
        run_named(tuple((w, (lambda w=w, e=e: bench(w, e, clip, tmp, args.threads, args.horizon)))
                        for w, e in CASES if w in args.weights),
                  args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
