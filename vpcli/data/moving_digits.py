"""Stochastic Moving MNIST ("moving digits"), generated offline and reproducibly.

The protocol follows SVG (Denton & Fergus 2018, ``edenton/svg`` ``data/moving_mnist.py``) as
refined by SRVP (Franceschi et al. 2020, ``edouardelasalles/srvp`` ``data/mmnist.py`` and
``preprocessing/mmnist/make_test_set.py``); what we read there and kept:

- 64x64 frames, 1 or 2 digits, each a 28x28 glyph (SRVP pastes raw 28x28 MNIST digits; SVG
  rescales them to 32x32 -- ``digit_size`` selects either).
- Each digit starts at a uniform integer position inside the frame and with an integer velocity
  ``(dx, dy)``, each component uniform in ``[-max_speed, max_speed]``, ``max_speed = 4``.
- Positions advance by the velocity every frame. When a digit reaches a wall it bounces; in the
  *stochastic* version it then takes a NEW random velocity (both components redrawn in
  ``[-4, 4]``) whose component normal to that wall is forced to point away from it (SRVP;
  SVG draws the normal component in ``[1, 4]`` away from the wall). The bounce is resolved inside
  the time step (the digit travels to the wall, then uses the new velocity for the rest of the
  step), as SRVP does, so a digit never leaves the frame. The deterministic version reflects the
  normal component instead.
- Overlapping digits are combined by **sum clipped to 255**, which is what both reference
  implementations do (``x[x > 255] = 255`` / ``x[x > 1] = 1``), not by ``max``; pass
  ``combine="max"`` for the maximum instead.
- SRVP's test set: 10,000 sequences of 100 frames (``smmnist_test_2digits_64.npz``, key
  ``sequences`` stored as ``(T, N, H, W)`` uint8). Our npz output stores ``(N, T, H, W)``.

Reproducibility: sequence ``i`` depends only on ``(seed, split, i)`` (plus the epoch when
``deterministic=False``): its generator is ``numpy.random.Generator(PCG64(h))`` with ``h`` a
SHA-256 hash of those values, and integers are drawn from the raw 64-bit PCG64 stream by
rejection sampling (not by ``Generator.integers``, whose algorithm NumPy may change between
versions), so a test set is identical bit for bit on every run, machine and NumPy version.
Digit pools (sklearn, glyphs) are built without any random numbers at all.

Digit sources (all 28x28 uint8, the glyph scaled into a 20x20 box and centred, as MNIST does):

- ``"sklearn"``: scikit-learn's ``load_digits`` 8x8 images, upscaled with bicubic interpolation
  (in NumPy, so the pool is the same on every machine).
- ``"glyphs"``: digits rendered with OpenCV's Hershey fonts (faces x stroke widths x slants),
  anti-aliased at 4x and downsampled; the pixels depend on the OpenCV build.
- a path: a real MNIST idx file (``train-images-idx3-ubyte``, optionally ``.gz``) or a folder
  holding ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte``.

Train/test pools are disjoint: a folder with both MNIST files uses the official split; any other
source puts every 6th image (index ``% 6 == 5``, about MNIST's 10k/70k ratio) in the test pool.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import math
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from vpcli.errors import DataFormatError, InputError, UsageError
from vpcli.io.atomic import (
    atomic_dir,
    atomic_path,
    check_overwrite,
    check_writable_dir,
    write_text,
)

FRAME_SIZE = 64
DIGIT_SIZE = 28
MAX_SPEED = 4
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
SPLITS = ("train", "test")
TEST_EVERY = 6  # index % 6 == 5 -> test pool (sources without an official split)

__all__ = [
    "MovingDigits",
    "MovingDigitsSample",
    "generate_moving_digits",
    "load_digit_pool",
    "read_idx_images",
    "render_glyph_digits",
    "sequence_seed",
    "sklearn_digits",
]


# --------------------------------------------------------------------------- randomness


def sequence_seed(*parts: object) -> int:
    """A 128-bit seed from a SHA-256 hash of ``parts`` (stable across runs and machines)."""
    text = "vpcli.moving_digits|" + "|".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:16], "little")


class _Draws:
    """Uniform integers from the raw PCG64 stream (version-stable, unlike ``Generator.integers``)."""

    def __init__(self, seed: int):
        self.gen = np.random.Generator(np.random.PCG64(seed))

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in ``[lo, hi]`` (both inclusive), by rejection sampling."""
        n = hi - lo + 1
        if n <= 0:
            raise ValueError(f"empty range [{lo}, {hi}]")
        limit = (1 << 64) - ((1 << 64) % n)  # largest multiple of n below 2**64: no modulo bias
        while True:
            r = int(self.gen.bit_generator.random_raw())
            if r < limit:
                return lo + r % n


# --------------------------------------------------------------------------- digit sources


def _to_mnist_box(img: np.ndarray, size: int = DIGIT_SIZE) -> np.ndarray:
    """Crop a float glyph to its ink, fit it into a 20/28 box keeping aspect, centre it."""
    import cv2

    ys, xs = np.nonzero(img > 0.05)
    out = np.zeros((size, size), np.float32)
    if len(ys) == 0:
        return out.astype(np.uint8)
    crop = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    box = max(1, round(size * 20 / 28))
    h, w = crop.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    crop = cv2.resize(crop, (nw, nh), interpolation=interp)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = crop
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _cubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices ``(n_out, 4)`` and weights ``(n_out, 4)`` of a Keys bicubic (a = -0.5) resize.

    Pixel centres are aligned (``src = (dst + 0.5) * n_in / n_out - 0.5``) and borders are
    replicated, as ``cv2.resize`` does (OpenCV uses a = -0.75); written out in NumPy so the
    result does not depend on the OpenCV build.
    """
    a = -0.5
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(src)
    idx = base[:, None].astype(np.int64) + np.arange(-1, 3)[None, :]  # (n_out, 4)
    d = np.abs(src[:, None] - idx)  # distance of each tap, in [0, 2]
    w = np.where(d <= 1, (a + 2) * d**3 - (a + 3) * d**2 + 1,
                 np.where(d < 2, a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a, 0.0))
    return np.clip(idx, 0, n_in - 1), w


def _cubic_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bicubic resize of a float64 ``(H, W)`` image; taps summed in a fixed order (reproducible)."""
    ri, rw = _cubic_taps(img.shape[0], out_h)
    ci, cw = _cubic_taps(img.shape[1], out_w)
    rows = img[ri[:, 0]] * rw[:, 0:1]
    for k in range(1, 4):
        rows = rows + img[ri[:, k]] * rw[:, k:k + 1]  # (out_h, W)
    out = rows[:, ci[:, 0]] * cw[None, :, 0]
    for k in range(1, 4):
        out = out + rows[:, ci[:, k]] * cw[None, :, k]  # (out_h, out_w)
    return out


@functools.lru_cache(maxsize=4)
def sklearn_digits(size: int = DIGIT_SIZE) -> np.ndarray:
    """scikit-learn's 1797 8x8 digits as ``uint8 (1797, size, size)`` MNIST-like glyphs.

    Each 8x8 image (values 0..16, already filling its box) is upscaled bicubically to the 20/28
    box, contrast-stretched so strokes saturate like MNIST's (``clip((v - 0.15) / 0.6)``) and
    centred with a 4/28 margin. Pure NumPy: the same bytes on every machine.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise InputError("digit_source='sklearn' needs scikit-learn",
                         "pip install scikit-learn, or use digit_source='glyphs'") from None

    images = load_digits().images.astype(np.float64) / 16.0  # (1797, 8, 8) in [0, 1]
    box = max(1, round(size * 20 / 28))
    off = (size - box) // 2
    out = np.zeros((len(images), size, size), np.uint8)
    for i, im in enumerate(images):
        big = np.clip((_cubic_resize(im, box, box) - 0.15) / 0.6, 0.0, 1.0)
        out[i, off:off + box, off:off + box] = np.floor(big * 255.0 + 0.5).astype(np.uint8)
    out.setflags(write=False)
    return out


_HERSHEY_FACES = (
    "FONT_HERSHEY_SIMPLEX", "FONT_HERSHEY_PLAIN", "FONT_HERSHEY_DUPLEX", "FONT_HERSHEY_COMPLEX",
    "FONT_HERSHEY_TRIPLEX", "FONT_HERSHEY_COMPLEX_SMALL", "FONT_HERSHEY_SCRIPT_SIMPLEX",
    "FONT_HERSHEY_SCRIPT_COMPLEX",
)


@functools.lru_cache(maxsize=4)
def render_glyph_digits(size: int = DIGIT_SIZE) -> np.ndarray:
    """Digits 0-9 rendered with OpenCV's Hershey fonts: ``uint8 (N, size, size)``.

    Variants: 8 font faces x 4 stroke widths (erode / as drawn / two dilations, at 4x) x 3 slants
    (shear -0.25, 0, 0.25), each rendered for the ten digits, anti-aliased at 4x, then cropped to
    the ink and fitted into the 20/28 box. Variants whose ten glyphs repeat an earlier variant are
    dropped (OpenCV 5 draws several Hershey faces with one outline font and ignores
    ``thickness``, hence the morphological stroke widths). No randomness; the pixels do depend on
    the OpenCV build, so ``meta.json`` records the pool's SHA-256.
    """
    import cv2

    scale_up = 4
    canvas = 48 * scale_up
    strokes = (-3, 0, 4, 8)  # kernel size at 4x: negative = erode
    glyphs, seen = [], set()
    for face in _HERSHEY_FACES:
        font = getattr(cv2, face)
        for stroke in strokes:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (abs(stroke), abs(stroke))) if stroke else None
            for shear in (-0.25, 0.0, 0.25):
                variant = []
                for digit in "0123456789":
                    img = np.zeros((canvas, canvas), np.uint8)
                    font_scale = cv2.getFontScaleFromHeight(font, 24 * scale_up, 6)
                    (tw, th), _ = cv2.getTextSize(digit, font, font_scale, 6)
                    org = ((canvas - tw) // 2, (canvas + th) // 2)
                    cv2.putText(img, digit, org, font, font_scale, 255, 6, cv2.LINE_AA)
                    if stroke > 0:
                        img = cv2.dilate(img, kernel)
                    elif stroke < 0:
                        img = cv2.erode(img, kernel)
                    if shear:
                        m = np.float32([[1, shear, -shear * canvas / 2], [0, 1, 0]])
                        img = cv2.warpAffine(img, m, (canvas, canvas), flags=cv2.INTER_LINEAR)
                    variant.append(_to_mnist_box(img.astype(np.float32) / 255.0, size))
                key = b"".join(g.tobytes() for g in variant)
                if key not in seen:
                    seen.add(key)
                    glyphs.extend(variant)
    out = np.stack(glyphs)
    out.setflags(write=False)
    return out


def _open_maybe_gz(path: Path):
    with open(path, "rb") as f:
        head = f.read(2)
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Read an MNIST idx3 image file (optionally gzip-compressed) as ``uint8 (N, rows, cols)``.

    Format (big-endian): int32 magic 2051 (0x00000803 = unsigned bytes, 3 dims), int32 count,
    int32 rows, int32 cols, then count*rows*cols bytes, row-major.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"MNIST idx file not found: {path}",
                         "pass the path of train-images-idx3-ubyte (or .gz), or a folder holding it")
    try:
        with _open_maybe_gz(path) as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataFormatError(f"cannot read MNIST idx file {path}: {e}",
                              "re-download train-images-idx3-ubyte.gz") from None
    if len(data) < 16:
        raise DataFormatError(f"{path} is too short to be an idx image file ({len(data)} bytes)",
                              "pass train-images-idx3-ubyte(.gz), not a label file")
    magic, n, rows, cols = struct.unpack(">iiii", data[:16])
    if magic != IDX_IMAGES_MAGIC:
        what = " (that is an idx1 *label* file)" if magic == 2049 else ""
        raise DataFormatError(
            f"{path} is not an MNIST idx image file: magic number {magic}, expected "
            f"{IDX_IMAGES_MAGIC}{what}",
            "pass train-images-idx3-ubyte(.gz) or t10k-images-idx3-ubyte(.gz)")
    if n < 0 or rows <= 0 or cols <= 0:
        raise DataFormatError(f"{path}: invalid idx header (count={n}, rows={rows}, cols={cols})",
                              "the file is corrupt; re-download it")
    expected = n * rows * cols
    if len(data) - 16 != expected:
        raise DataFormatError(
            f"{path}: idx header promises {n}x{rows}x{cols} = {expected} bytes of pixels, "
            f"the file holds {len(data) - 16}", "the file is truncated or corrupt; re-download it")
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols)


_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
}


def _find_idx(folder: Path, split: str) -> Path | None:
    for name in _IDX_NAMES[split]:
        for cand in (folder / name, folder / f"{name}.gz"):
            if cand.is_file():
                return cand
    return None


def _resize_pool(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1:] == (size, size):
        return images
    import cv2

    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA if im.shape[0] > size
                                else cv2.INTER_CUBIC) for im in images])


def _every_sixth(images: np.ndarray, split: str) -> np.ndarray:
    idx = np.arange(len(images))
    keep = (idx % TEST_EVERY == TEST_EVERY - 1) if split == "test" else (idx % TEST_EVERY != TEST_EVERY - 1)
    return images[keep]


def _source_key(digit_source) -> str:
    if isinstance(digit_source, (str, os.PathLike)) and str(digit_source) in ("sklearn", "glyphs"):
        return str(digit_source)
    if isinstance(digit_source, (str, os.PathLike)):
        return str(Path(digit_source).expanduser().resolve())
    raise UsageError(f"digit_source must be 'sklearn', 'glyphs' or a path, got {digit_source!r}",
                     "pass digit_source='sklearn' (offline default)")


@functools.lru_cache(maxsize=8)
def _pool(key: str, split: str, size: int) -> np.ndarray:
    if key == "sklearn":
        pool = _every_sixth(sklearn_digits(size), split)
    elif key == "glyphs":
        # Split by rendering *variant* (10 consecutive glyphs each) so the test pool holds styles
        # never seen in training, for every digit class.
        glyphs = render_glyph_digits(size)
        variant = np.arange(len(glyphs)) // 10
        keep = (variant % TEST_EVERY == TEST_EVERY - 1) if split == "test" else (variant % TEST_EVERY != TEST_EVERY - 1)
        pool = glyphs[keep]
    else:
        path = Path(key)
        if path.is_dir():
            own, other = _find_idx(path, split), _find_idx(path, "test" if split == "train" else "train")
            if own is not None and other is not None:
                pool = _resize_pool(read_idx_images(own), size)  # the official MNIST split
            elif own is not None or other is not None:
                pool = _every_sixth(_resize_pool(read_idx_images(own or other), size), split)
            else:
                raise InputError(f"no MNIST idx image file in {path}",
                                 "expected train-images-idx3-ubyte[.gz] and/or t10k-images-idx3-ubyte[.gz]")
        else:
            pool = _every_sixth(_resize_pool(read_idx_images(path), size), split)
    if len(pool) == 0:
        raise InputError(f"the digit source {key!r} has no digits for split {split!r}",
                         "use a larger idx file or digit_source='sklearn'")
    pool = np.ascontiguousarray(pool)
    pool.setflags(write=False)
    return pool


def load_digit_pool(digit_source="sklearn", split: str = "train", size: int = DIGIT_SIZE) -> np.ndarray:
    """The ``uint8 (N, size, size)`` digit images that ``split`` draws from (cached)."""
    if split not in SPLITS:
        raise UsageError(f"split must be one of {SPLITS}, got {split!r}", "use split='train' or 'test'")
    return _pool(_source_key(digit_source), split, int(size))


# --------------------------------------------------------------------------- trajectories


def _advance(x: Fraction, y: Fraction, vx: int, vy: int, lim_x: int, lim_y: int, max_speed: int,
             stochastic: bool, draws: _Draws) -> tuple[Fraction, Fraction, int, int, bool]:
    """Move one time unit inside ``[0, lim_x] x [0, lim_y]``, bouncing off the walls.

    The digit travels to the first wall it meets, changes velocity there and spends the rest of
    the time step moving with the new velocity (possibly meeting further walls). Positions are
    exact fractions, so rounding to pixels never depends on floating-point error.
    """
    remaining = Fraction(1)
    bounced = False
    while True:
        tx = Fraction(lim_x - x) / vx if vx > 0 else (Fraction(-x) / vx if vx < 0 else None)
        ty = Fraction(lim_y - y) / vy if vy > 0 else (Fraction(-y) / vy if vy < 0 else None)
        t_hit = min((t for t in (tx, ty) if t is not None), default=None)
        if t_hit is None or t_hit >= remaining:
            return x + vx * remaining, y + vy * remaining, vx, vy, bounced
        x, y = x + vx * t_hit, y + vy * t_hit  # exactly on the wall(s) reached
        remaining -= t_hit
        bounced = True
        if stochastic:
            vx, vy = draws.randint(-max_speed, max_speed), draws.randint(-max_speed, max_speed)
        # Point the velocity away from every wall the digit touches (deterministic mode:
        # this is the mirror reflection of the normal component).
        if x <= 0:
            vx = abs(vx)
        elif x >= lim_x:
            vx = -abs(vx)
        if y <= 0:
            vy = abs(vy)
        elif y >= lim_y:
            vy = -abs(vy)


def _round_half_up(v: Fraction) -> int:
    return math.floor(v + Fraction(1, 2))


def _trajectory(draws: _Draws, length: int, lim: int, max_speed: int, stochastic: bool):
    """Integer top-left positions ``(T, 2)`` as (x, y), velocities ``(T, 2)``, bounces ``(T-1,)``."""
    x, y = Fraction(draws.randint(0, lim)), Fraction(draws.randint(0, lim))
    vx, vy = draws.randint(-max_speed, max_speed), draws.randint(-max_speed, max_speed)
    pos = np.zeros((length, 2), np.int64)
    vel = np.zeros((length, 2), np.int64)
    bounces = np.zeros((max(length - 1, 0),), bool)
    for t in range(length):
        pos[t] = (_round_half_up(x), _round_half_up(y))  # stays in [0, lim]: x, y do
        vel[t] = (vx, vy)
        if t + 1 < length:
            x, y, vx, vy, bounces[t] = _advance(x, y, vx, vy, lim, lim, max_speed, stochastic, draws)
    return pos, vel, bounces


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class MovingDigitsSample:
    """One sequence with its latent state.

    ``frames`` uint8 ``(T, H, W, 1)``; per digit ``d``: ``positions[d, t] = (x, y)`` of the
    glyph's top-left corner, ``velocities[d, t] = (dx, dy)`` the velocity leaving frame ``t``'s
    position (before any bounce during step t -> t+1 is resolved it equals ``velocities[d, t]``),
    ``bounced[d, t]`` whether a wall was hit during step t -> t+1, ``digit_index[d]`` the glyph's
    index in the split's pool.
    """

    frames: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    bounced: np.ndarray
    digit_index: np.ndarray


class MovingDigits:
    """Indexable Stochastic Moving MNIST: ``ds[i]`` -> ``uint8 (T, H, W, 1)``.

    Args:
        num_digits: digits per sequence (SVG/SRVP: 1 or 2).
        size: frame height and width (64).
        length: frames per sequence.
        digit_source: ``"sklearn"``, ``"glyphs"`` or a path to an MNIST idx file / folder.
        split: ``"train"`` or ``"test"``; selects the (disjoint) digit pool and the seed stream.
        seed: dataset seed; sequence ``i`` depends only on ``(seed, split, i)``.
        deterministic: ``True`` (default): ``ds[i]`` is the same array on every call, run and
            machine. ``False``: the content also depends on the epoch given to
            :meth:`set_epoch`, so a training loop sees fresh sequences every epoch, still
            reproducibly. (This is *not* SVG's ``deterministic`` flag; that is ``stochastic``.)
        stochastic: new random velocity at each bounce (default) or plain reflection.
        num_sequences: ``len(ds)`` (SRVP's test set has 10,000).
        digit_size: glyph size (28 = raw MNIST, as SRVP; SVG uses 32).
        max_speed: velocity components are drawn in ``[-max_speed, max_speed]``.
        combine: ``"sum"`` (sum clipped to 255, as SVG/SRVP) or ``"max"`` for overlaps.
    """

    def __init__(self, num_digits: int = 2, size: int = FRAME_SIZE, length: int = 30,
                 digit_source="sklearn", split: str = "train", seed: int = 0,
                 deterministic: bool = True, *, stochastic: bool = True,
                 num_sequences: int = 10_000, digit_size: int = DIGIT_SIZE,
                 max_speed: int = MAX_SPEED, combine: str = "sum"):
        if not isinstance(num_digits, int) or num_digits < 1:
            raise UsageError(f"num_digits must be a positive integer, got {num_digits!r}", "use 1 or 2")
        if not isinstance(length, int) or length < 1:
            raise UsageError(f"length must be a positive integer, got {length!r}", "e.g. length=30")
        if not isinstance(digit_size, int) or digit_size < 1:
            raise UsageError(f"digit_size must be a positive integer, got {digit_size!r}", "use 28")
        if not isinstance(size, int) or size < digit_size:
            raise UsageError(f"size must be an integer >= digit_size ({digit_size}), got {size!r}",
                             "use size=64")
        if split not in SPLITS:
            raise UsageError(f"split must be one of {SPLITS}, got {split!r}", "use split='train' or 'test'")
        if combine not in ("sum", "max"):
            raise UsageError(f"combine must be 'sum' or 'max', got {combine!r}", "use combine='sum'")
        if not isinstance(max_speed, int) or max_speed < 0:
            raise UsageError(f"max_speed must be a non-negative integer, got {max_speed!r}", "use 4")
        if not isinstance(num_sequences, int) or num_sequences < 0:
            raise UsageError(f"num_sequences must be a non-negative integer, got {num_sequences!r}",
                             "e.g. num_sequences=10000")
        self.num_digits = num_digits
        self.size = size
        self.length = length
        self.digit_source = digit_source
        self.source_key = _source_key(digit_source)
        self.split = split
        self.seed = int(seed)
        self.deterministic = deterministic
        self.stochastic = stochastic
        self.num_sequences = num_sequences
        self.digit_size = digit_size
        self.max_speed = max_speed
        self.combine = combine
        self.epoch = 0
        self.pool = load_digit_pool(digit_source, split, digit_size)

    def __len__(self) -> int:
        return self.num_sequences

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's sequences (only changes content when ``deterministic=False``)."""
        self.epoch = int(epoch)

    def _index(self, i: int) -> int:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an integer, got {type(i).__name__}")
        i = int(i)
        if i < 0:
            i += self.num_sequences
        if not 0 <= i < self.num_sequences:
            raise IndexError(f"sequence index {i} out of range for {self.num_sequences} sequences")
        return i

    def sample(self, i: int) -> MovingDigitsSample:
        """Sequence ``i`` with its trajectories (positions, velocities, bounces, digit ids)."""
        i = self._index(i)
        parts = [self.seed, self.split, i] if self.deterministic else [self.seed, self.split, i, "epoch", self.epoch]
        draws = _Draws(sequence_seed(*parts))
        d, lim = self.digit_size, self.size - self.digit_size
        frames = np.zeros((self.length, self.size, self.size), np.uint16)
        pos, vel, bounced, ids = [], [], [], []
        for _ in range(self.num_digits):
            k = draws.randint(0, len(self.pool) - 1)
            glyph = self.pool[k]
            p, v, b = _trajectory(draws, self.length, lim, self.max_speed, self.stochastic)
            for t in range(self.length):
                x, y = p[t]
                patch = frames[t, y:y + d, x:x + d]  # view: rows are y, columns are x
                if self.combine == "sum":
                    patch += glyph
                else:
                    np.maximum(patch, glyph, out=patch)
            pos.append(p), vel.append(v), bounced.append(b), ids.append(k)
        out = np.minimum(frames, 255).astype(np.uint8)[..., None]  # (T, H, W, 1)
        return MovingDigitsSample(out, np.stack(pos), np.stack(vel), np.stack(bounced),
                                  np.asarray(ids, np.int64))

    def __getitem__(self, i: int) -> np.ndarray:
        return self.sample(i).frames

    def config(self) -> dict:
        """The parameters that define the sequences (written to ``meta.json``)."""
        src = self.digit_source if self.source_key in ("sklearn", "glyphs") else str(self.digit_source)
        return {
            "generator": "vpcli.data.moving_digits", "num_digits": self.num_digits, "size": self.size,
            "length": self.length, "digit_source": src, "split": self.split, "seed": self.seed,
            "deterministic": self.deterministic, "stochastic": self.stochastic,
            "digit_size": self.digit_size, "max_speed": self.max_speed, "combine": self.combine,
            "pool_size": len(self.pool),
            "pool_sha256": hashlib.sha256(self.pool.tobytes()).hexdigest(),
        }


# --------------------------------------------------------------------------- writing


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def write_npz_reproducible(path: Path, arrays: dict[str, np.ndarray], *, compress: bool = True) -> None:
    """An ``.npz`` whose bytes depend only on the arrays (``np.savez`` stamps the current time).

    Entries get a fixed 1980-01-01 timestamp. With ``compress=True`` the bytes also depend on the
    zlib build; the arrays themselves never do.
    """
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method, allowZip64=True) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = 0o644 << 16
            zf.writestr(info, _npy_bytes(array))


def _versions() -> dict:
    import platform

    import vpcli

    return {"vpcli": getattr(vpcli, "__version__", "unknown"), "numpy": np.__version__,
            "python": platform.python_version()}


def generate_moving_digits(out_dir: str | os.PathLike, *, num_sequences: int, length: int = 30,
                           num_digits: int = 2, seed: int = 0, digit_source="sklearn",
                           split: str = "test", format: str = "npz", size: int = FRAME_SIZE,
                           stochastic: bool = True, fps: float = 10.0, lossless: bool = True,
                           overwrite: bool = False,
                           progress: Callable[[int, int], None] | None = None, **kwargs) -> Path:
    """Write ``num_sequences`` moving-digit sequences under ``out_dir``; return the main output.

    Formats (every file written atomically, plus ``meta.json`` with the parameters and the
    SHA-256 of the uint8 pixel data in ``(N, T, H, W)`` order, which identifies a set on any
    machine):

    - ``"npz"``: ``moving_digits_<split>_<D>digits_<size>.npz`` holding one array ``sequences``
      ``uint8 (N, T, H, W)`` (SRVP's own file stores ``(T, N, H, W)``; readers tell them apart).
    - ``"png"``: ``seq_00000/00000.png`` ... grayscale PNG frame folders (readable as clips).
    - ``"mp4"``: ``seq_00000.mp4`` ... (``lossless=True``: ``libx264rgb -qp 0`` via
      :func:`vpcli.io.video.write_video`).

    ``progress(done, total)`` is called after each sequence. Extra keyword arguments go to
    :class:`MovingDigits` (``digit_size``, ``max_speed``, ``combine``).
    """
    if format not in ("npz", "png", "mp4"):
        raise UsageError(f"format must be 'npz', 'png' or 'mp4', got {format!r}", "use format='npz'")
    if not isinstance(num_sequences, int) or num_sequences < 1:
        raise UsageError(f"num_sequences must be a positive integer, got {num_sequences!r}", "e.g. 1000")
    ds = MovingDigits(num_digits=num_digits, size=size, length=length, digit_source=digit_source,
                      split=split, seed=seed, deterministic=True, stochastic=stochastic,
                      num_sequences=num_sequences, **kwargs)
    out_dir = check_writable_dir(out_dir)
    meta_path = out_dir / "meta.json"
    digest = hashlib.sha256()
    names: list[str] = []

    if format == "npz":
        final = out_dir / f"moving_digits_{split}_{num_digits}digits_{size}.npz"
        check_overwrite(final, overwrite)
        with atomic_path(final, overwrite=overwrite) as tmp:
            # Streamed into the zip member one sequence at a time: memory stays at one sequence
            # even for SRVP-sized sets (10,000 x 100 frames = 4 GB of pixels).
            header = {"descr": np.dtype(np.uint8).str, "fortran_order": False,
                      "shape": (num_sequences, length, size, size)}  # (N, T, H, W)
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
                info = zipfile.ZipInfo("sequences.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array_header_1_0(member, header)
                    for i in range(num_sequences):
                        seq = np.ascontiguousarray(ds[i][..., 0])  # (T, H, W)
                        digest.update(seq.tobytes())
                        member.write(seq.tobytes())
                        if progress:
                            progress(i + 1, num_sequences)
        names.append(final.name)
        main = final
    else:
        targets = [out_dir / (f"seq_{i:05d}" + (".mp4" if format == "mp4" else "")) for i in range(num_sequences)]
        for t in targets:
            check_overwrite(t, overwrite)
        if format == "mp4":
            from vpcli.io.video import write_video
        else:
            from PIL import Image
        for i, target in enumerate(targets):
            frames = ds[i]  # (T, H, W, 1)
            digest.update(np.ascontiguousarray(frames[..., 0]).tobytes())
            if format == "png":
                with atomic_dir(target, overwrite=overwrite) as tmp:
                    for t, frame in enumerate(frames[..., 0]):
                        Image.fromarray(frame).save(tmp / f"{t:05d}.png", optimize=False)
            else:
                rgb = np.repeat(frames, 3, axis=-1)  # (T, H, W, 3): encoders want RGB
                write_video(target, rgb, fps, lossless=lossless, overwrite=overwrite)  # atomic itself
            names.append(target.name)
            if progress:
                progress(i + 1, num_sequences)
        main = out_dir
    meta = {**ds.config(), "num_sequences": num_sequences, "format": format, "fps": fps,
            "array_axes": "NTHW", "pixels_sha256": digest.hexdigest(), "files": names[:5] + (
                [f"... {len(names)} in all"] if len(names) > 5 else []),
            "protocol": "Stochastic Moving MNIST (SVG, Denton & Fergus 2018; SRVP, Franceschi et al. 2020)",
            "versions": _versions()}
    check_overwrite(meta_path, True)
    write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return main
