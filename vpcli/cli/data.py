"""`vpcli data ...`: dataset tools (info, convert) and synthetic data generators."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli.common import Inputs, Json, OutDir, Overwrite, Recursive, Shard, parse_shard, run_per_input

app = typer.Typer(help="Dataset tools (info, convert) and synthetic data generators.\n\n"
                       "Example: vpcli data info clips/ --recursive", no_args_is_help=True)


@app.command()
def info(inputs: Inputs, recursive: Recursive = False, shard: Shard = None, json: Json = False) -> None:
    """Frames, resolution, fps and codec of each clip, and a summary.

    Example: vpcli data info clips/ --recursive --json
    """
    from rich.console import Console
    from rich.table import Table

    from vpcli import api
    pairs = api.collect_inputs(inputs, recursive=recursive, shard=parse_shard(shard))
    rows: list[dict] = []

    def one(pair):
        rec = api.video_info(pair[0])
        rows.append(rec)
        return rec
    code = run_per_input(pairs, one, as_json=json, name=lambda p: str(p[0]))
    if not json and rows:
        table = Table("input", "kind", "frames", "size (WxH)", "fps", "codec")
        for (path, _), rec in zip([p for p in pairs], rows):
            table.add_row(api.display_path(path), rec["kind"], str(rec["frames"]), f"{rec['width']}x{rec['height']}",
                          f"{rec['fps']:g}", rec["codec"])
        console = Console()
        console.print(table)
        sizes = {(r["width"], r["height"]) for r in rows}
        console.print(f"{len(rows)} clips, {sum(r['frames'] for r in rows)} frames, "
                      f"{len(sizes)} resolution(s), lengths {min(r['frames'] for r in rows)}"
                      f"-{max(r['frames'] for r in rows)} frames")
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
    pairs = api.collect_inputs(inputs, recursive=recursive, shard=parse_shard(shard))

    def one(pair):
        path, name = pair
        return api.convert(path, out / name, fmt=format, lossless=lossless, fps=fps, start=start, end=end,
                           stride=stride, size=size, overwrite=overwrite)
    raise typer.Exit(run_per_input(pairs, one, as_json=json, name=lambda p: str(p[0])))
