"""`vpcli data ...`: dataset tools (info, convert) and synthetic data generators."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli.common import (
    Inputs,
    Json,
    OutDir,
    Overwrite,
    Recursive,
    Shard,
    display_path,
    emit_json,
    run_per_input,
)

app = typer.Typer(help="Dataset tools (info, split, convert) and synthetic data generators (moving-digits, synth-street, camera-motion).\n\n"
                       "Example: vpcli data info clips/ --recursive", no_args_is_help=True)


@app.command()
def info(inputs: Inputs, recursive: Recursive = False, shard: Shard = None, json: Json = False) -> None:
    """Frames, resolution, fps and codec of each clip, and a summary.

    Example: vpcli data info clips/ --recursive --json
    """
    from rich.console import Console
    from rich.table import Table

    from vpcli import api
    rows: list[tuple[Path, dict]] = []

    def for_each(items, fn):
        def one(item):
            rec = fn(item)
            rows.append((item[0], rec))
            return rec
        return run_per_input(items, one, as_json=json, name=lambda p: str(p[0]))
    code = api.data_info(inputs, recursive=recursive, shard=shard, for_each=for_each)
    if not json and rows:
        table = Table("input", "kind", "frames", "size (HxW)", "fps", "codec")
        for path, rec in rows:
            table.add_row(display_path(path), rec["kind"], str(rec["frames"]), f"{rec['height']}x{rec['width']}",
                          f"{rec['fps']:g}", rec["codec"])
        console = Console()
        console.print(table)
        recs = [rec for _, rec in rows]
        sizes = {(r["width"], r["height"]) for r in recs}
        console.print(f"{len(recs)} clips, {sum(r['frames'] for r in recs)} frames, "
                      f"{len(sizes)} resolution(s), lengths {min(r['frames'] for r in recs)}"
                      f"-{max(r['frames'] for r in recs)} frames")
    raise typer.Exit(code)


@app.command()
def convert(
    inputs: Inputs,
    out: OutDir = Path("converted"),
    format: Annotated[str, typer.Option("--format", "-f", help="mp4, mkv, gif, or png (frame folder).")] = "mp4",
    lossless: Annotated[bool, typer.Option(help="Exact RGB (libx264rgb qp 0) for mp4/mkv.")] = False,
    fps: Annotated[Optional[float], typer.Option(help="Output frame rate (default: the input's / stride).")] = None,
    start: Annotated[int, typer.Option(min=0, help="First frame.")] = 0,
    end: Annotated[Optional[int], typer.Option(help="Stop before this frame.")] = None,
    stride: Annotated[int, typer.Option(min=1, help="Keep every n-th frame.")] = 1,
    size: Annotated[Optional[str], typer.Option(metavar="HxW", help="Resize to HxW.")] = None,
    recursive: Recursive = False, shard: Shard = None, json: Json = False, overwrite: Overwrite = False,
) -> None:
    """Re-encode clips (videos, GIFs, frame folders) to MP4, lossless MKV, GIF or PNG frames.

    Writes OUT/<name>/video.<ext> (or frames/) and meta.json per input.

    Example: vpcli data convert clips/*.avi --out mp4s/ --size 128x128 --stride 2
    """
    from vpcli import api
    from vpcli.cli.render import ConvertRenderer
    options = api.ConvertOptions(format=format, lossless=lossless, fps=fps, start=start, end=end, stride=stride,
                                 size=size, recursive=recursive, shard=shard, overwrite=overwrite)
    progress = ConvertRenderer(json)
    try:
        code = api.convert(inputs, out, options, callback=progress, for_each=progress.for_each)
    finally:
        progress.stop()  # also on a failure or Ctrl-C: the terminal is left clean
    raise typer.Exit(code)


@app.command()
def split(
    folder: Annotated[Path, typer.Argument(help="Folder of clips (videos, frame folders).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where train.txt/val.txt/test.txt go (default: FOLDER).")] = None,
    fractions: Annotated[str, typer.Option(help="train,val,test shares.")] = "0.8,0.1,0.1",
    json: Json = False, overwrite: Overwrite = False,
) -> None:
    """Write a deterministic train/val/test split (one relative path per line per file).

    The split is a hash of each clip's relative path, the same one training uses when no split
    file is given, so adding clips never moves existing ones between splits.

    Example: vpcli data split clips/ --fractions 0.9,0.05,0.05
    """
    from vpcli import api
    counts = api.data_split(folder, out or folder, fractions, overwrite=overwrite)
    if json:
        emit_json(counts)
    else:
        typer.echo(", ".join(f"{k}: {v}" for k, v in counts["counts"].items()) + f" -> {counts['out']}")


@app.command("moving-digits")
def moving_digits(
    out: OutDir = Path("moving-digits"),
    num: Annotated[int, typer.Option("--num", "-n", min=1, help="Number of sequences.")] = 100,
    length: Annotated[int, typer.Option(min=2, help="Frames per sequence.")] = 30,
    digits: Annotated[int, typer.Option(min=1, max=3, help="Digits per sequence.")] = 2,
    split_: Annotated[str, typer.Option("--split", help="train or test (disjoint digit pools).")] = "test",
    format: Annotated[str, typer.Option("--format", "-f", help="npz (one (N,T,H,W) array), png (frame folders) or mp4.")] = "npz",
    mnist: Annotated[Optional[Path], typer.Option(help="A real MNIST idx file (or folder) instead of scikit-learn's digits.")] = None,
    glyphs: Annotated[bool, typer.Option(help="Use OpenCV-rendered digit glyphs instead of scikit-learn's digits.")] = False,
    seed: Annotated[int, typer.Option(help="Base seed; the same seed gives bit-identical files.")] = 0,
    json: Json = False, overwrite: Overwrite = False,
) -> None:
    """Stochastic Moving MNIST (SVG/SRVP protocol): 64x64, digits bounce and take a new random
    direction at each wall. Test sets from a fixed seed are identical bit for bit.

    Example: vpcli data moving-digits --out mmnist-test --num 256 --length 25 --seed 0
    """
    from vpcli.cli.progress import counting
    from vpcli.data.moving_digits import generate_moving_digits
    source = mnist if mnist is not None else ("glyphs" if glyphs else "sklearn")
    with counting("moving-digits", num, unit="seq", quiet=json) as progress:
        path = generate_moving_digits(out, num_sequences=num, length=length, num_digits=digits, seed=seed,
                                      digit_source=source, split=split_, format=format, overwrite=overwrite,
                                      progress=progress)
    record = {"output": str(path), "sequences": num, "length": length}
    emit_json(record) if json else typer.echo(f"wrote {num} sequences of {length} frames -> {path}")


@app.command("synth-street")
def synth_street(
    out: OutDir = Path("synth-street"),
    num: Annotated[int, typer.Option("--num", "-n", min=1, help="Number of sequences.")] = 10,
    length: Annotated[int, typer.Option(min=2, help="Frames per sequence.")] = 30,
    size: Annotated[str, typer.Option(metavar="HxW", help="Resolution.")] = "128x256",
    seed: Annotated[int, typer.Option(help="Base seed; sequence i depends only on (seed, i).")] = 0,
    start: Annotated[int, typer.Option(min=0, help="Index of the first sequence (to extend a set).")] = 0,
    json: Json = False, overwrite: Overwrite = False,
) -> None:
    """Procedural driving scenes with exact ground truth: per sequence frames/ (RGB PNG),
    labels/ (Cityscapes train ids, palette PNG), flow_forward.npz, flow_backward.npz,
    occlusion.npz, depth, camera and meta.json.

    Example: vpcli data synth-street --out street --num 4 --length 16 --size 128x256
    """
    from vpcli.cli.progress import counting
    from vpcli.data.synth_street import SynthStreetConfig, generate
    from vpcli.io.sources import parse_size
    h, w = parse_size(size)
    with counting("synth-street", num, unit="seq", quiet=json) as progress:
        paths = generate(out, num_sequences=num, config=SynthStreetConfig(height=h, width=w, length=length),
                         seed=seed, start_index=start, overwrite=overwrite, progress=progress)
    record = {"output": str(out), "sequences": [p.name for p in paths]}
    emit_json(record) if json else typer.echo(f"wrote {len(paths)} sequences of {length} frames at {h}x{w} -> {out}")


@app.command("camera-motion")
def camera_motion(
    out: OutDir = Path("camera-motion"),
    num: Annotated[int, typer.Option("--num", "-n", min=1, help="Number of clips.")] = 100,
    length: Annotated[int, typer.Option(min=2, help="Frames per clip.")] = 16,
    size: Annotated[str, typer.Option(metavar="HxW", help="Resolution.")] = "96x128",
    photos: Annotated[str, typer.Option(help="train (never the held-out photographs), or heldout / astronaut / "
                                               "coffee / chelsea / rocket for evaluation sets.")] = "train",
    format: Annotated[str, typer.Option("--format", "-f", help="png (frame folders) or mp4 (lossless).")] = "png",
    seed: Annotated[int, typer.Option(help="Base seed; clip i depends only on (seed, i).")] = 0,
    json: Json = False, overwrite: Overwrite = False,
) -> None:
    """Camera pans, zooms, rotations and perspective motion over real photographs, with textured
    objects moving in front: real textures with known kinds of motion, for training RGB predictors
    (the same generator as --data synthetic:camera-motion).

    Example: vpcli data camera-motion --out pans --num 200 --length 16 --size 96x128
    """
    from vpcli.cli.progress import counting
    from vpcli.data.camera_motion import CameraMotionConfig, generate
    from vpcli.io.sources import parse_size
    h, w = parse_size(size)
    config = CameraMotionConfig(height=h, width=w, length=length, photos=photos)
    with counting("camera-motion", num, unit="clip", quiet=json) as progress:
        paths = generate(out, num_clips=num, config=config, seed=seed, format=format, overwrite=overwrite,
                         progress=progress)
    record = {"output": str(out), "clips": [p.name for p in paths]}
    emit_json(record) if json else typer.echo(f"wrote {len(paths)} clips of {length} frames at {h}x{w} -> {out}")
