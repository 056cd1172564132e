"""Semantic label maps on disk: palette PNGs, ``.npz`` stacks, colourised videos.

Labels are ``int64`` class ids (DESIGN.md); 255 means "ignore". The default class list is the
19 Cityscapes train ids with the official Cityscapes colours. A label PNG is written in 'P'
(palette) mode so that its pixel *indices are the class ids*: any tool that reads indices gets
the ids back, and any image viewer shows the colours.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vpcli.errors import DataFormatError, InputError
from vpcli.io.atomic import atomic_dir, atomic_path
from vpcli.io.sources import natural_key

IGNORE_INDEX = 255

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

# Official colours of the 19 train ids (cityscapesScripts, labels.py), in train-id order.
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)
CITYSCAPES_PALETTE.setflags(write=False)

# Single-file label images we read from a folder (lossy formats would corrupt the ids).
LABEL_IMAGE_EXTS = frozenset({".png", ".bmp", ".tif", ".tiff", ".pgm"})


def _palette(palette) -> np.ndarray:
    pal = CITYSCAPES_PALETTE if palette is None else np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3 or len(pal) == 0:
        raise DataFormatError(f"a palette must have shape (K, 3), got {tuple(pal.shape)}",
                              "pass one RGB colour per class id")
    if len(pal) > IGNORE_INDEX:
        # Index 255 is reserved for "ignore", so at most 255 real classes fit in a palette PNG.
        raise DataFormatError(f"a palette can hold at most {IGNORE_INDEX} classes, got {len(pal)}",
                              "class id 255 is reserved for 'ignore'")
    if pal.dtype != np.uint8:
        if np.any(pal < 0) or np.any(pal > 255):
            raise DataFormatError("palette colours must lie in 0..255", "use 8-bit RGB colours")
        pal = pal.astype(np.uint8)
    return pal


def _check_ids(labels: np.ndarray, num_classes: int, what: str = "labels") -> np.ndarray:
    """Return ``labels`` as an integer array; reject ids that have no colour / class."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(f"{what} must be integer class ids, got dtype {labels.dtype}",
                              "convert with labels.astype(np.int64) (after argmax for scores)")
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        values = np.unique(labels[bad])
        shown = ", ".join(str(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")
        raise DataFormatError(
            f"{what} contain class ids outside 0..{num_classes - 1} (and 255 = ignore): {shown}",
            "pass a palette with one colour per class, or map unknown ids to 255")
    return labels


def colorize(labels, palette=None) -> np.ndarray:
    """Class ids ``(...)`` -> RGB ``uint8 (..., 3)``; ignore (255) is black."""
    pal = _palette(palette)
    labels = _check_ids(labels, len(pal))
    # A 256-entry lookup table: ids index it directly, entry 255 (ignore) stays black.
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(pal)] = pal
    return lut[labels.astype(np.intp)]


def overlay(frames, labels, alpha: float = 0.5, palette=None) -> np.ndarray:
    """Blend label colours over RGB frames: ``(1 - alpha) * frame + alpha * colour``, rounded.

    ``frames`` is ``uint8 (..., H, W, 3)``, ``labels`` the matching ``(..., H, W)``. Ignored pixels
    keep the frame unchanged (blending with black would only darken them).
    """
    frames = np.asarray(frames)
    labels = np.asarray(labels)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if frames.dtype != np.uint8 or frames.shape[-1:] != (3,):
        raise DataFormatError(f"frames must be uint8 (..., H, W, 3), got {frames.dtype} {tuple(frames.shape)}",
                              "decode frames with vpcli.io.video.read_video")
    if frames.shape[:-1] != labels.shape:
        raise DataFormatError(f"frames {tuple(frames.shape)} and labels {tuple(labels.shape)} differ in size",
                              "labels must have one id per frame pixel")
    colours = colorize(labels, palette).astype(np.float32)
    blended = (1.0 - alpha) * frames.astype(np.float32) + alpha * colours
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    ignore = labels == IGNORE_INDEX
    out[ignore] = frames[ignore]
    return out


# ---------------------------------------------------------------- single PNGs

def _label_image(labels_hw, palette) -> Image.Image:
    pal = _palette(palette)
    labels = _check_ids(labels_hw, len(pal))
    if labels.ndim != 2:
        raise DataFormatError(f"a label PNG holds one (H, W) map, got shape {tuple(labels.shape)}",
                              "write a (T, H, W) stack with write_label_folder or write_labels_npz")
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    # Full 256-entry palette: class colours first, everything else (incl. 255 = ignore) black.
    full = np.zeros((256, 3), np.uint8)
    full[:len(pal)] = pal
    img.putpalette(full.tobytes())
    return img


def write_label_png(path, labels_hw, palette=None, *, overwrite: bool = True) -> Path:
    """Write ``(H, W)`` class ids as a palette PNG whose pixel indices are the ids."""
    img = _label_image(labels_hw, palette)
    with atomic_path(path, overwrite=overwrite) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def read_label_png(path) -> np.ndarray:
    """Read class ids ``int64 (H, W)`` from a palette PNG or an 8/16-bit grayscale id image."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"label image {path} does not exist", "check the path")
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in ("P", "L", "I;16", "I;16B", "I;16L", "I"):
                # 'P': raw indices, NOT the colours -- the indices are the ids.
                ids = np.array(img)
            else:
                ids = None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataFormatError(f"{path} is not a readable image: {e}", "write labels with write_label_png") from None
    if ids is None:
        hint = ("this looks like a colourised label image; pass the class-id PNG "
                "(palette or grayscale) instead" if mode in ("RGB", "RGBA") else
                "label images must be palette ('P') or grayscale id images")
        raise DataFormatError(f"{path} is a {mode} image, not a class-id image", hint)
    if ids.ndim != 2:
        raise DataFormatError(f"{path} does not hold a single-channel id map", "write labels with write_label_png")
    return ids.astype(np.int64)


# ---------------------------------------------------------------- stacks

def _check_stack(labels_thw, what: str = "labels") -> np.ndarray:
    labels = np.asarray(labels_thw)
    if labels.ndim != 3:
        raise DataFormatError(f"{what} must be a (T, H, W) stack, got shape {tuple(labels.shape)}",
                              "add a time axis with labels[None] for a single map")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(f"{what} must be integer class ids, got dtype {labels.dtype}",
                              "convert with labels.astype(np.int64)")
    return labels


def write_labels_npz(path, labels_thw, classes: Sequence[str] | None = None, *,
                     overwrite: bool = True) -> Path:
    """Write a ``(T, H, W)`` id stack (and optionally the class names) to a compressed ``.npz``."""
    labels = _check_stack(labels_thw)
    # Store in the smallest dtype that holds the ids; read_labels_npz gives int64 back.
    if labels.size == 0 or (labels.min() >= 0 and labels.max() <= 255):
        stored = labels.astype(np.uint8)
    else:
        stored = labels.astype(np.int32 if np.abs(labels).max() < 2**31 else np.int64)
    arrays = {"labels": stored}
    if classes is not None:
        arrays["classes"] = np.array([str(c) for c in classes], dtype=np.str_)
    with atomic_path(path, overwrite=overwrite) as tmp:
        # A file object, so numpy does not append ".npz" to the temporary name.
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return Path(path)


def read_labels_npz(path) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Read ``(labels int64 (T, H, W), class names or None)`` written by :func:`write_labels_npz`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"label file {path} does not exist", "check the path")
    try:
        # allow_pickle=False: an .npz from elsewhere must not run code when loaded.
        with np.load(path, allow_pickle=False) as data:
            if "labels" not in data.files:
                raise DataFormatError(f"{path} has no 'labels' array (has: {', '.join(data.files) or 'nothing'})",
                                      "write label stacks with write_labels_npz")
            labels = data["labels"]
            classes = tuple(str(c) for c in data["classes"]) if "classes" in data.files else None
    except DataFormatError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise DataFormatError(f"{path} is not a readable .npz file: {e}",
                              "write label stacks with write_labels_npz") from None
    labels = _check_stack(labels, what=f"labels in {path}")
    return labels.astype(np.int64), classes


def write_label_folder(folder, labels_thw, palette=None, *, overwrite: bool = False) -> Path:
    """Write one palette PNG per frame, ``00000.png``, ``00001.png``, ... (folder replaced atomically)."""
    labels = _check_stack(labels_thw)
    images = [_label_image(lab, palette) for lab in labels]  # validate everything before writing
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        for i, img in enumerate(images):
            img.save(tmp / f"{i:05d}.png", format="PNG")
    return Path(folder)


def read_label_folder(folder) -> np.ndarray:
    """Read every label image in ``folder`` (natural order: 2.png before 10.png) as ``int64 (T, H, W)``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"label folder {folder} does not exist", "check the path")
    files = sorted((p for p in folder.iterdir()
                    if p.suffix.lower() in LABEL_IMAGE_EXTS and not p.name.startswith(".") and p.is_file()),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise InputError(f"no label images in {folder}", f"expected {', '.join(sorted(LABEL_IMAGE_EXTS))} files")
    maps = [read_label_png(f) for f in files]
    for f, m in zip(files, maps):
        if m.shape != maps[0].shape:
            raise DataFormatError(f"{f} is {m.shape[1]}x{m.shape[0]} but {files[0].name} is "
                                  f"{maps[0].shape[1]}x{maps[0].shape[0]}",
                                  "all label maps of one clip must have the same size")
    return np.stack(maps)


def write_label_video(path, labels_thw, fps: float = 10, frames=None, alpha: float = 0.5,
                      palette=None, *, overwrite: bool = True) -> Path:
    """Write colourised labels as a video (``.mp4``/``.gif``/folder), overlaid on ``frames`` if given."""
    from vpcli.io.video import (
        VideoWriter,  # the PyAV-backed writer; imported when needed
    )

    labels = _check_stack(labels_thw)
    if frames is not None:
        frames = np.asarray(frames)
        if frames.shape[:3] != labels.shape:
            raise DataFormatError(f"frames {tuple(frames.shape)} do not match labels {tuple(labels.shape)}",
                                  "pass the frames the labels were computed from")
    _check_ids(labels, len(_palette(palette)))  # fail before creating any file
    with VideoWriter(path, fps=fps, overwrite=overwrite) as writer:
        for t in range(len(labels)):
            rgb = colorize(labels[t], palette) if frames is None else overlay(frames[t], labels[t], alpha, palette)
            writer.write(rgb)
    return Path(path)


__all__ = [
    "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "IGNORE_INDEX", "LABEL_IMAGE_EXTS",
    "colorize", "overlay", "write_label_png", "read_label_png", "write_labels_npz", "read_labels_npz",
    "write_label_folder", "read_label_folder", "write_label_video",
]
