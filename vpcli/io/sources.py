"""Turn command-line input specs into a list of clips, split them into shards, name outputs.

An *input* is one clip: a video file (MP4, GIF, ...) or a frame folder (a folder that directly
holds images). A spec may be such an input, a folder of inputs, a glob, or ``-`` for paths
read from stdin (DESIGN.md, CLI section).
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO, TypeVar

from vpcli.errors import InputError, UsageError
from vpcli.io.paths import natural_key
from vpcli.io.video import VIDEO_EXTS, is_frame_folder, is_video_file

T = TypeVar("T")

_SPEC_HINT = "inputs are video files, frame folders, folders of videos, quoted globs, or - for paths on stdin"
_GLOB_CHARS = re.compile(r"[*?\[]")
_VIDEO_TEXT = " ".join(sorted({*VIDEO_EXTS, ".gif"}))  # GIFs count as videos for inputs


def _hidden(p: Path) -> bool:
    # Dot files include our own atomic-write temporaries (".clip.xxxx.part.mp4"): never inputs.
    return p.name.startswith(".")


# Companions that `vpcli segment` / `vpcli flow` and the generators store beside a clip
# (``X.labels/``, ``X.flow/``, ``X.labels.npz``); they are never inputs themselves.
COMPANION_SUFFIXES = (".labels", ".flow")


def companion_of(p: Path) -> tuple[str, str] | None:
    """``(clip name, kind)`` of a companion by its name: ``X.labels/`` or ``X.labels.npz`` ->
    ``("X", "labels")``, ``X.flow/`` or ``X.flow.npz`` -> ``("X", "flow")``; None for anything else."""
    name = p.name.removesuffix(".npz")
    for suffix in COMPANION_SUFFIXES:
        if name.endswith(suffix):
            return name[:-len(suffix)], suffix[1:]
    return None


def is_companion(p: Path) -> bool:
    return companion_of(p) is not None


def is_sequence_folder(p: Path) -> bool:
    """A sequence folder (synth-street layout): RGB in ``frames/`` plus labels/flow/meta beside it."""
    return (p / "frames").is_dir() and any((p / n).exists() for n in ("labels", "flow_forward.npz", "meta.json"))


# `vpcli data convert` writes each clip as ``NAME/video.<ext>`` beside ``NAME/meta.json`` (or as
# ``NAME/frames/``, a sequence folder): such a folder is one input, the clip NAME, so converted
# clips feed predict, segment, flow and eval without --recursive and keep their names.
CONVERTED_VIDEOS = ("video.mp4", "video.mkv", "video.gif")


def converted_clip(p: Path) -> Path | None:
    """The video of a `vpcli data convert` output folder (``NAME/video.mp4`` + ``meta.json``), else None."""
    if not p.is_dir() or not (p / "meta.json").is_file():
        return None
    return next((p / n for n in CONVERTED_VIDEOS if (p / n).is_file()), None)


def _is_input(p: Path) -> bool:
    if _hidden(p) or is_companion(p):
        return False
    if p.is_file():
        return is_video_file(p)
    return p.is_dir() and (is_frame_folder(p) or is_sequence_folder(p) or converted_clip(p) is not None)


def _as_clip(p: Path) -> Path:
    """The frames of a sequence folder, or the video of a converted one, are its clip; anything
    else is its own clip."""
    if p.is_dir() and is_sequence_folder(p):
        return p / "frames"
    return converted_clip(p) or p


def _children_inputs(folder: Path, recursive: bool, _seen: set[Path] | None = None) -> list[Path]:
    """Videos and frame folders inside ``folder`` (a frame folder is not searched further)."""
    seen = _seen if _seen is not None else set()
    seen.add(folder.resolve())  # a symlink back up the tree must not recurse forever
    found = []
    for entry in sorted(folder.iterdir(), key=natural_key):
        if _hidden(entry):
            continue
        if _is_input(entry):
            found.append(_as_clip(entry))
        elif recursive and entry.is_dir() and entry.resolve() not in seen:
            found.extend(_children_inputs(entry, recursive=True, _seen=seen))
    return found


def _expand_folder(folder: Path, recursive: bool, spec: str) -> list[Path]:
    if is_frame_folder(folder) or is_sequence_folder(folder) or converted_clip(folder) is not None:
        return [_as_clip(folder)]
    found = _children_inputs(folder, recursive)
    if found:
        return found
    if not recursive and _children_inputs(folder, recursive=True):
        hint = "its subfolders hold some: pass --recursive to search them"
    else:
        hint = (f"point to a video ({_VIDEO_TEXT}), a folder of frames, "
                "or a folder holding those")
    raise InputError(f"no videos or frame folders in {spec}", hint)


def _expand_path(spec: str, recursive: bool) -> list[Path]:
    path = Path(spec).expanduser()
    if path.is_dir():
        return _expand_folder(path, recursive, spec)
    if path.is_file():
        if not is_video_file(path):
            raise InputError(f"{spec} is not a video file",
                             f"supported videos: {_VIDEO_TEXT}; for images pass their folder")
        return [path]
    if os.path.lexists(path):  # a broken symlink, a socket, ...
        raise InputError(f"{spec} is neither a file nor a folder", _SPEC_HINT)
    raise InputError(f"input {spec} does not exist", f"check the path; {_SPEC_HINT}")


def _expand_glob(spec: str) -> list[Path]:
    matches = glob.glob(os.path.expanduser(spec), recursive=True)  # recursive=True: "**" spans folders
    if not matches:
        raise InputError(f"the pattern {spec} matches nothing",
                         "check the pattern; quote it so the shell leaves it to vpcli")
    # Keep only clips: a "**" pattern also matches the images inside frame folders and other files.
    found = sorted((Path(m) for m in matches if _is_input(Path(m))), key=natural_key)
    if not found:
        raise InputError(f"the pattern {spec} matches {len(matches)} path(s) but no video or frame folder",
                         _SPEC_HINT)
    return found


def _stdin_specs(stream: TextIO) -> list[str]:
    lines = (line.strip() for line in stream.read().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def expand_inputs(specs: Sequence[str | os.PathLike], *, recursive: bool = False,
                  stdin: TextIO | None = None) -> list[Path]:
    """Expand input specs into a de-duplicated list of clips (videos and frame folders).

    Each spec's matches are sorted naturally; specs keep the order given. Paths read from stdin
    (``-``) are taken literally (no globbing) and keep their order, one spec per line.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    if not specs:
        raise UsageError("no inputs given", _SPEC_HINT)
    if sum(1 for s in specs if os.fspath(s) == "-") > 1:
        raise UsageError("'-' (read paths from stdin) can be given only once", "give '-' once; list every path on stdin")
    out: list[Path] = []
    seen: set[Path] = set()

    def add(paths: Iterable[Path]) -> None:
        for p in paths:
            key = p.resolve()  # "a/../b.mp4" and "b.mp4" are one input
            if key not in seen:
                seen.add(key)
                out.append(p)

    for spec in map(os.fspath, specs):
        if spec == "-":
            lines = _stdin_specs(stdin if stdin is not None else sys.stdin)
            if not lines:
                raise InputError("no paths were given on stdin",
                                 "send one path per line, e.g. find clips -name '*.mp4' | vpcli ... -")
            for line in lines:
                add(_expand_path(line, recursive))
        elif not os.path.lexists(os.path.expanduser(spec)) and _GLOB_CHARS.search(spec):
            add(_expand_glob(spec))  # an existing path with "[" in its name is taken literally
        else:
            add(_expand_path(spec, recursive))
    return out


def shard(items: Sequence[T], k: int, n: int) -> list[T]:
    """Shard ``k`` of ``n`` (1-based) of ``items``: every n-th item of the naturally sorted list.

    Round-robin by sorted index keeps shards balanced even when similar clips sort together; the
    n shards are disjoint and together hold every item, whatever the order ``items`` came in.
    """
    if isinstance(k, bool) or isinstance(n, bool) or not isinstance(k, int) or not isinstance(n, int):
        raise UsageError(f"shard K/N must be integers, got {k!r}/{n!r}", "e.g. --shard 2/8")
    if not 1 <= k <= n:
        raise UsageError(f"shard {k}/{n}: K must be between 1 and N", "shards count from 1, e.g. 1/4 .. 4/4")
    ordered = sorted(items, key=lambda x: natural_key(os.fspath(x) if isinstance(x, (str, os.PathLike)) else str(x)))
    return ordered[k - 1::n]


# ---------------------------------------------------------------- output names

def _safe(name: str) -> str:
    # Keep letters, digits, ".", "-", "_"; no separators or spaces in folder names; never hidden.
    name = re.sub(r"[^\w.\-]+", "_", name).lstrip(".")
    return name or "input"


def _base_name(path: Path) -> str:
    path = Path(path)
    name = path.name or path.resolve().name  # "." or "clips/" -> the folder's real name
    if path.is_dir():
        if name == "frames" and is_sequence_folder(path.parent):
            return path.parent.name  # seq_00001/frames -> seq_00001
        return name  # frame folder: its name, dots and all ("shot.01")
    if path.name in CONVERTED_VIDEOS and converted_clip(path.parent) == path:
        return path.parent.name or path.resolve().parent.name  # converted/clip01/video.mp4 -> clip01
    return path.stem or name


def input_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """A unique, stable output subfolder name for each input, in the order given.

    The name is the file stem (``clip.mp4`` -> ``clip``) or the frame folder's name. Inputs whose
    names collide get just enough parent folders prefixed to separate them (``a/clip.mp4`` ->
    ``a_clip``), then, within one folder, their extension (``clip_mp4``, ``clip_gif``), and as a
    last resort 8 hex digits of their absolute path's sha1. Names depend only on the full input
    list (not its order), so compute them *before* sharding: a shard alone cannot see collisions.
    """
    paths = [Path(p) for p in paths]
    absolute = [Path(os.path.abspath(p)) for p in paths]
    base = [_base_name(p) for p in paths]
    names = [_safe(b) for b in base]

    def collisions() -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, nm in enumerate(names):
            groups.setdefault(nm.lower(), []).append(i)  # lower(): case-insensitive file systems
        return {k: v for k, v in groups.items() if len(v) > 1}

    # Colliding inputs from different folders: prefix just enough parent folders to separate them.
    for idx in collisions().values():
        parents = {absolute[i].parent for i in idx}
        if len(parents) > 1:
            depth = 1
            while len({absolute[i].parent.parts[-depth:] for i in idx}) < len(parents):
                depth += 1
            for i in idx:
                names[i] = _safe("_".join([*absolute[i].parent.parts[-depth:], base[i]]))
    for idx in collisions().values():  # same folder, same stem: tell them apart by extension
        for i in idx:
            if paths[i].suffix:
                names[i] = _safe(f"{names[i]}_{paths[i].suffix.lstrip('.')}")
    for idx in collisions().values():
        for i in idx:
            names[i] = f"{names[i]}_{hashlib.sha1(str(absolute[i]).encode()).hexdigest()[:8]}"
    return names


def input_name(path: str | os.PathLike, among: Sequence[str | os.PathLike] | None = None) -> str:
    """The output subfolder name of ``path``; pass the full input list as ``among`` to disambiguate."""
    if among is None:
        return _safe(_base_name(Path(path)))
    among = list(among)
    target = os.path.abspath(path)
    for p, name in zip(among, input_names(among)):
        if os.path.abspath(p) == target:
            return name
    raise ValueError(f"{path} is not in the input list")


# ---------------------------------------------------------------- command-line values

_take_shard = shard  # collect_inputs' ``shard`` argument shadows the function

def collect_inputs(specs: Sequence[str | os.PathLike], *, recursive: bool = False,
                   shard: tuple[int, int] | None = None) -> list[tuple[Path, str]]:
    """Expand input specs and give each a stable output name, then keep shard K of N.

    Names are computed on the full list before sharding, so two shards never pick one name.
    """
    paths = expand_inputs(list(specs), recursive=recursive)
    pairs = list(zip(paths, input_names(paths)))
    if shard is not None:
        pairs = _take_shard(pairs, *shard) if len(pairs) else pairs
    return pairs


_SHARD_HINT = "K of N shards, both whole numbers with 1 <= K <= N, e.g. --shard 1/4 .. --shard 4/4"


def parse_shard(spec: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"K/N"`` (or a ``(K, N)`` pair) -> ``(K, N)`` with 1 <= K <= N."""
    if spec is None:
        return None
    try:
        k, n = (int(x) for x in spec.split("/")) if isinstance(spec, str) else spec
    except (TypeError, ValueError):
        raise UsageError(f"--shard expects K/N like 2/8, got {spec!r}", _SHARD_HINT) from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (k, n)):
        raise UsageError(f"--shard expects K/N like 2/8, got {spec!r}", _SHARD_HINT)
    if not 1 <= k <= n:
        raise UsageError(f"--shard {k}/{n}: K must be between 1 and N", "shards count from 1, e.g. 1/4 .. 4/4")
    return k, n


# The largest side a --size may ask for (8K video is 7680x4320): a larger frame would not fit in
# memory once a model or a flow method works on it; documented in README.md ("Limits").
MAX_SIDE = 8192


def parse_size(text: str | Sequence[int] | None, option: str = "--size", *, min_side: int = 1,
               max_side: int = MAX_SIDE) -> tuple[int, int] | None:
    """``"64x128"`` (H x W, or an ``(H, W)`` pair) -> ``(64, 128)``; ``option`` names it in errors.

    Both sides must lie in ``[min_side, max_side]`` (a command passes the smallest size its
    methods can work on; ``max_side`` is :data:`MAX_SIDE`).
    """
    if text is None:
        return None
    hint = f"give height x width in pixels, each {min_side} to {max_side}, e.g. {option} 128x256"
    try:
        h, w = (int(v) for v in text.lower().split("x")) if isinstance(text, str) else text
    except (TypeError, ValueError, AttributeError):
        raise UsageError(f"{option} must be HxW like 128x256, got {text!r}", hint) from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (h, w)):
        raise UsageError(f"{option} must be HxW like 128x256, got {text!r}", hint)
    if h < 1 or w < 1:
        raise UsageError(f"{option} must be positive, got {text!r}", hint)
    if h < min_side or w < min_side:
        raise UsageError(f"{option} {h}x{w}: both sides must be at least {min_side} pixels", hint)
    if h > max_side or w > max_side:
        raise UsageError(f"{option} {h}x{w}: sides are limited to {max_side} pixels", hint)
    return h, w


def check_positive_int(value: object, option: str) -> int:
    """``value`` if it is an integer >= 1, else a UsageError naming ``option`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{option} must be an integer >= 1, got {value!r}", f"pass {option} 1 or more")
    return value


__all__ = ["MAX_SIDE", "natural_key", "expand_inputs", "shard", "input_name", "input_names",
           "collect_inputs", "parse_shard", "parse_size", "check_positive_int"]
