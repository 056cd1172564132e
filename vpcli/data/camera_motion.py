"""Camera motion over real photographs: pans, zooms, rotations and perspective, with textured
objects moving on their own in front.

Each clip looks at one photograph through a virtual camera. Frame ``t`` is the photograph warped
by a homography ``T_t`` (photograph pixels -> frame pixels), and ``T_{t+1} = M_t T_t`` where the
per-frame camera motion ``M_t`` is a rotation + zoom + shift + perspective about the frame centre.
``M_t`` is constant (steady pan / zoom / roll) or changes once, smoothly, to a new random motion
at a random frame (a camera that speeds up, stops or turns: what a stochastic predictor's latents
are for); a few clips hold still. The trajectory is drawn so that every frame stays inside the
photograph (shrunk until it does), so no clip shows a mirrored or empty border. In front, 0-3
objects -- ellipses, rectangles and polygons cut from other photographs or textures, soft-edged --
move by their own velocity, rotation and scale change. Photometry: a per-clip gamma, contrast,
saturation and colour balance, and per-frame sensor noise.

Sources (:func:`photographs`): scikit-image's and scikit-learn's bundled photographs, greyscale
ones given a random smooth colouring, plus procedural colour noise; **never** the held-out
evaluation photographs (:data:`HELD_OUT`: scikit-image's astronaut, coffee, chelsea (= cat) and
rocket), which only ``photos="heldout"`` renders, for evaluation sets.

Motion is drawn in frame pixels per frame at the rendered size (``max_shift`` etc.), and the
photograph's scale (source pixels per frame pixel, ``zoom_range``) varies per clip, so the same
generator gives textures at many scales. Item ``i`` of a seed is the same on every machine.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields

import numpy as np

from vpcli.errors import ConfigError

# Evaluation photographs: never trained on (skimage's cat is chelsea under another name).
HELD_OUT = ("astronaut", "coffee", "chelsea", "cat", "rocket")
EVAL_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# Training photographs: scikit-image's other bundled images and scikit-learn's sample images.
SKIMAGE_TRAIN = ("camera", "coins", "moon", "page", "text", "hubble_deep_field", "immunohistochemistry", "retina",
                 "brick", "grass", "gravel", "cell", "colorwheel", "logo", "clock")
SKLEARN_TRAIN = ("china.jpg", "flower.jpg")
assert not set(SKIMAGE_TRAIN) & set(HELD_OUT)


def rgb_uint8(img: np.ndarray) -> np.ndarray:
    """Any image array as contiguous uint8 ``(H, W, 3)`` (greyscale repeated, alpha dropped)."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (255 * (img.astype(np.float64) / max(float(img.max()), 1e-9))).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def training_photographs(blur: float = 0.0) -> list[np.ndarray]:
    """uint8 ``(H, W, 3)``: scikit-image's :data:`SKIMAGE_TRAIN`, its stereo motorcycle (left
    view) and scikit-learn's two sample images; never :data:`HELD_OUT`. ``blur`` (Gaussian sigma)
    smooths each."""
    import cv2
    import skimage.data as skd
    from sklearn.datasets import load_sample_image
    photos = [getattr(skd, name)() for name in SKIMAGE_TRAIN] + [load_sample_image(n) for n in SKLEARN_TRAIN]
    photos.append(skd.stereo_motorcycle()[0])
    out = [rgb_uint8(p) for p in photos]
    return [cv2.GaussianBlur(p, (0, 0), blur) for p in out] if blur > 0 else out


def heldout_photographs() -> dict[str, np.ndarray]:
    """The evaluation photographs :data:`EVAL_PHOTOS`, uint8 ``(H, W, 3)``, by name."""
    import skimage.data as skd
    return {name: rgb_uint8(getattr(skd, name)()) for name in EVAL_PHOTOS}


def procedural_textures(rng: np.random.Generator, n: int, size: int = 768) -> list[np.ndarray]:
    """Sums of blurred colour noise at several scales (no pixel-scale noise), uint8."""
    import cv2
    out = []
    for _ in range(n):
        acc = np.zeros((size, size, 3), np.float32)
        for s in (4, 8, 16, 32, 64):
            small = rng.random((size // s + 1, size // s + 1, 3)).astype(np.float32)
            acc += rng.uniform(0.1, 1.0) * cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)[:size, :size]
        acc = (acc - acc.min()) / (acc.max() - acc.min() + 1e-6)
        out.append((acc * 255).astype(np.uint8))
    return out


@functools.lru_cache(maxsize=2)
def _sources(photos: str) -> tuple[np.ndarray, ...]:
    if photos == "heldout":
        return tuple(heldout_photographs().values())
    if photos in EVAL_PHOTOS:
        return (heldout_photographs()[photos],)
    return tuple(training_photographs()) + tuple(procedural_textures(np.random.default_rng(7), 3, 512))


def _is_grey(img: np.ndarray) -> bool:
    return bool(np.all(img[..., 0] == img[..., 1]) and np.all(img[..., 1] == img[..., 2]))


def _colourise(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A greyscale photograph through a random smooth colour map (each channel a monotone curve
    between two random colours), so that greyscale sources still teach colour."""
    g = img[..., 0].astype(np.float32) / 255.0
    lo, hi = rng.uniform(0.0, 0.35, 3), rng.uniform(0.65, 1.0, 3)
    gam = rng.uniform(0.7, 1.4, 3)
    out = lo + (hi - lo) * g[..., None] ** gam
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def centred_motion(h: int, w: int, angle: float, log_zoom: float, tx: float, ty: float, px: float = 0.0,
                   py: float = 0.0) -> np.ndarray:
    """3x3 homography in frame pixels: rotate by ``angle`` degrees and zoom by ``exp(log_zoom)``
    about the frame centre, with perspective terms ``px, py`` (per pixel from the centre), then
    shift by ``(tx, ty)`` pixels."""
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    a, s = np.deg2rad(angle), np.exp(log_zoom)
    C = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1.0]])
    R = np.array([[s * np.cos(a), -s * np.sin(a), 0], [s * np.sin(a), s * np.cos(a), 0], [px, py, 1.0]])
    Ci = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    Tr = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1.0]])
    return Tr @ C @ R @ Ci


@dataclass(frozen=True)
class CameraMotionConfig:
    height: int = 64
    width: int = 128
    length: int = 10
    photos: str = "train"             # "train"; "heldout" or one of EVAL_PHOTOS: evaluation sets only
    max_shift: float = 3.0            # camera pan, frame pixels per frame (each axis)
    max_rotation: float = 1.0         # camera roll, degrees per frame
    max_zoom: float = 0.03            # |log zoom| per frame
    max_perspective: float = 1e-4     # perspective terms per frame, at a 128 px frame
    zoom_range: tuple = (0.6, 3.5)   # source pixels per frame pixel at frame 0 (log-uniform)
    p_still: float = 0.08             # clips whose camera holds still (objects may move)
    p_change: float = 0.4             # clips whose camera motion changes once, smoothly
    max_objects: int = 3
    object_speed: float = 2.0         # object speed relative to max_shift
    noise: float = 2.0                # max sensor noise sigma, in 8-bit levels

    def __post_init__(self):
        if self.height < 8 or self.width < 8:
            raise ConfigError(f"camera-motion size must be at least 8x8, got {self.height}x{self.width}",
                              "use e.g. height=64, width=128")
        if self.length < 1:
            raise ConfigError(f"camera-motion length must be >= 1, got {self.length}", "use e.g. length=10")
        if self.photos not in ("train", "heldout", *EVAL_PHOTOS):
            raise ConfigError(f"camera-motion photos must be 'train', 'heldout' or one of {', '.join(EVAL_PHOTOS)}, "
                              f"got {self.photos!r}", "train on photos='train'; the others are for evaluation sets")

    @classmethod
    def from_dict(cls, d: dict) -> CameraMotionConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"camera-motion config: unknown key(s) {', '.join(map(repr, unknown))}",
                              f"known keys: {', '.join(sorted(known))}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def _draw_motion(rng: np.random.Generator, cfg: CameraMotionConfig, gain: float = 1.0) -> np.ndarray:
    """(angle, log_zoom, tx, ty, px, py) per frame; each term active with its own probability, so
    that pure pans, pure zooms and mixtures all occur."""
    scale = max(cfg.height, cfg.width) / 128.0
    on = rng.random(4) < (0.9, 0.45, 0.35, 0.25)  # shift, zoom, rotation, perspective
    shift = rng.uniform(-1, 1, 2) * cfg.max_shift * scale * gain * rng.uniform(0.1, 1.0) * on[0]
    zoom = rng.uniform(-1, 1) * cfg.max_zoom * gain * on[1]
    rot = rng.uniform(-1, 1) * cfg.max_rotation * gain * on[2]
    persp = rng.uniform(-1, 1, 2) * cfg.max_perspective / scale * gain * on[3]
    return np.array([rot, zoom, shift[0], shift[1], persp[0], persp[1]])


def _trajectory(rng: np.random.Generator, cfg: CameraMotionConfig) -> list[np.ndarray]:
    """Per-frame camera motions ``M_0 .. M_{T-2}`` (3x3, frame pixels)."""
    h, w, n = cfg.height, cfg.width, cfg.length - 1
    if rng.random() < cfg.p_still:
        return [np.eye(3)] * n
    a = _draw_motion(rng, cfg)
    params = np.repeat(a[None], max(n, 0), axis=0)
    if n > 2 and rng.random() < cfg.p_change:
        b = _draw_motion(rng, cfg) * (0.0 if rng.random() < 0.2 else 1.0)  # a new motion, or a stop
        t0 = int(rng.integers(1, n))
        ramp = np.clip((np.arange(n) - t0 + 1) / rng.uniform(1.0, 4.0), 0.0, 1.0)[:, None]
        params = (1 - ramp) * a + ramp * b
    return [centred_motion(h, w, *p) for p in params]


def _corners(h: int, w: int) -> np.ndarray:
    return np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], np.float64).T


def _inside(T: np.ndarray, h: int, w: int, sh: int, sw: int, margin: float = 2.0) -> bool:
    """Every frame corner of ``T`` (source -> frame) maps inside the source."""
    p = np.linalg.inv(T) @ _corners(h, w)
    if np.any(np.abs(p[2]) < 1e-9):
        return False
    x, y = p[0] / p[2], p[1] / p[2]
    return bool(x.min() >= margin and y.min() >= margin and x.max() <= sw - 1 - margin and y.max() <= sh - 1 - margin)


def _initial_view(rng: np.random.Generator, cfg: CameraMotionConfig, sh: int, sw: int) -> np.ndarray:
    h, w = cfg.height, cfg.width
    z = np.exp(rng.uniform(*np.log(cfg.zoom_range)))
    z = min(z, (sh - 8) / h, (sw - 8) / w)  # source pixels per frame pixel
    y0 = rng.uniform(4, max(4.0, sh - 4 - h * z))
    x0 = rng.uniform(4, max(4.0, sw - 4 - w * z))
    return np.array([[1 / z, 0, -x0 / z], [0, 1 / z, -y0 / z], [0, 0, 1.0]])


def _fit_trajectory(rng, cfg, src_shape) -> list[np.ndarray]:
    """Camera transforms ``T_0 .. T_{T-1}`` that stay inside the photograph: the drawn motion is
    shrunk (and the start re-drawn) until every frame fits."""
    sh, sw = src_shape[:2]
    T0 = _initial_view(rng, cfg, sh, sw)
    motions = _trajectory(rng, cfg)
    for attempt in range(12):
        gain = 0.75 ** attempt
        Ts = [T0]
        for M in motions:
            M = np.eye(3) + gain * (M - np.eye(3))
            Ts.append(M @ Ts[-1])
        if all(_inside(T, cfg.height, cfg.width, sh, sw) for T in Ts):
            return Ts
        if attempt % 3 == 2:
            T0 = _initial_view(rng, cfg, sh, sw)
    return [T0] * cfg.length  # nothing fitted (a tiny photograph): a still camera


def _warp(src: np.ndarray, T: np.ndarray, h: int, w: int, border=None) -> np.ndarray:
    import cv2
    if border is None:
        border = cv2.BORDER_REFLECT
    return cv2.warpPerspective(src, T, (w, h), flags=cv2.INTER_LINEAR, borderMode=border)


def _prepare(src: np.ndarray, T0: np.ndarray) -> tuple[np.ndarray, float]:
    """Shrink the photograph with area averaging when frames sample it sparser than one source
    pixel per frame pixel (no aliasing); returns the source and the factor applied."""
    import cv2
    z = 1.0 / T0[0, 0]
    if z <= 1.25:
        return src, 1.0
    f = 1.0 / z
    small = cv2.resize(src, (max(8, round(src.shape[1] * f)), max(8, round(src.shape[0] * f))),
                       interpolation=cv2.INTER_AREA)
    return small, small.shape[1] / src.shape[1]


def _object_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A shape about the frame centre, uint8 0/255: ellipse, rectangle or random convex-ish polygon."""
    import cv2
    m = np.zeros((h, w), np.uint8)
    ry, rx = rng.uniform(h / 10, h / 3.5), rng.uniform(w / 10, w / 3.5)
    kind = rng.integers(3)
    c = (w // 2, h // 2)
    if kind == 0:
        cv2.ellipse(m, c, (int(rx), int(ry)), float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
    elif kind == 1:
        cv2.rectangle(m, (int(c[0] - rx), int(c[1] - ry)), (int(c[0] + rx), int(c[1] + ry)), 255, -1, cv2.LINE_AA)
    else:
        k = int(rng.integers(5, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = rng.uniform(0.6, 1.0, k)
        pts = np.stack([c[0] + rx * rad * np.cos(ang), c[1] + ry * rad * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(m, [pts], 255, cv2.LINE_AA)
    return m


def _photometric(rng: np.random.Generator, frames: np.ndarray, noise: float) -> np.ndarray:
    x = frames.astype(np.float32) / 255.0
    x = x ** rng.uniform(0.8, 1.25)
    mean = x.mean(axis=-1, keepdims=True)
    x = mean + (x - mean) * rng.uniform(0.6, 1.3)                       # saturation
    x = (x - 0.5) * rng.uniform(0.75, 1.2) + 0.5 + rng.uniform(-0.08, 0.08)  # contrast, brightness
    x = x * rng.uniform(0.9, 1.1, 3)                                     # colour balance
    sigma = rng.uniform(0, noise) / 255.0
    if sigma > 0:
        x = x + rng.normal(0, sigma, x.shape).astype(np.float32)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_clip(config: CameraMotionConfig, seed: int, *, return_camera: bool = False):
    """uint8 ``(T, H, W, 3)``: one clip, a deterministic function of ``(config, seed)``. With
    ``return_camera``, also the camera transforms ``(T, 3, 3)`` (photograph -> frame pixels): the
    background's motion from frame t to t+1 is ``T[t+1] @ inv(T[t])``."""
    import cv2
    cfg = config
    rng = np.random.default_rng(seed)
    sources = _sources(cfg.photos)
    h, w = cfg.height, cfg.width
    src = sources[int(rng.integers(len(sources)))]
    if _is_grey(src):
        src = _colourise(rng, src)
    Ts = _fit_trajectory(rng, cfg, src.shape)
    small, f = _prepare(src, Ts[0])
    S = np.diag([1 / f, 1 / f, 1.0])  # small-source pixels -> source pixels
    frames = np.stack([_warp(small, T @ S, h, w) for T in Ts]).astype(np.float32)
    for _ in range(int(rng.integers(0, cfg.max_objects + 1)) if rng.random() < 0.7 else 0):
        pool = _sources("train") if cfg.photos == "train" else sources
        fg = pool[int(rng.integers(len(pool)))]
        if _is_grey(fg):
            fg = _colourise(rng, fg)
        fg_T0 = _initial_view(rng, cfg, *fg.shape[:2])
        fg_small, ff = _prepare(fg, fg_T0)
        fg_T0 = fg_T0 @ np.diag([1 / ff, 1 / ff, 1.0])
        shape = _object_mask(rng, h, w)
        place = np.array([[1, 0, rng.uniform(-w / 3, w / 3)], [0, 1, rng.uniform(-h / 3, h / 3)], [0, 0, 1.0]])
        own = centred_motion(h, w, *_draw_motion(rng, cfg, gain=cfg.object_speed))
        step = place @ own @ np.linalg.inv(place)  # its own motion about its centre
        P = place
        for t in range(cfg.length):
            mask = _warp(shape, P, h, w, cv2.BORDER_CONSTANT).astype(np.float32)[..., None] / 255.0
            tex = _warp(fg_small, P @ fg_T0, h, w)
            frames[t] = frames[t] * (1 - mask) + tex * mask
            P = step @ P
    out = _photometric(rng, frames.round().clip(0, 255).astype(np.uint8), cfg.noise)
    return (out, np.stack(Ts)) if return_camera else out


def clip_seed(seed: int, index: int) -> int:
    """The render seed of clip ``index`` of a set made with base ``seed``."""
    import hashlib
    digest = hashlib.sha256(f"vpcli.camera_motion|{int(seed)}|{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generate(out_dir, *, num_clips: int, config: CameraMotionConfig | None = None, seed: int = 0,
             format: str = "png", fps: float = 25.0, overwrite: bool = False, progress=None) -> list:
    """Write ``clip_{i:05d}`` (a PNG frame folder, or ``.mp4`` lossless) for i < ``num_clips``,
    each written atomically, and ``meta.json`` with the config and seeds. Clip ``i`` is
    :func:`render_clip` with :func:`clip_seed` ``(seed, i)``: any one regenerates on its own.
    Existing clips are an error unless ``overwrite``."""
    import json

    from PIL import Image

    from vpcli.errors import UsageError
    from vpcli.io.atomic import (
        atomic_dir,
        check_overwrite,
        check_writable_dir,
        write_text,
    )
    config = CameraMotionConfig() if config is None else config
    if format not in ("png", "mp4"):
        raise UsageError(f"format must be 'png' or 'mp4', got {format!r}", "use format='png'")
    if isinstance(num_clips, bool) or not isinstance(num_clips, (int, np.integer)) or num_clips < 1:
        raise UsageError(f"num_clips must be a positive integer, got {num_clips!r}", "e.g. 100")
    out = check_writable_dir(out_dir)
    paths = [out / (f"clip_{i:05d}" + (".mp4" if format == "mp4" else "")) for i in range(num_clips)]
    for p in paths:
        check_overwrite(p, overwrite)
    for i, p in enumerate(paths):
        frames = render_clip(config, clip_seed(seed, i))
        if format == "mp4":
            from vpcli.io.video import write_video
            write_video(p, frames, fps, lossless=True, overwrite=overwrite)
        else:
            with atomic_dir(p, overwrite=overwrite) as tmp:
                for t, f in enumerate(frames):
                    Image.fromarray(f).save(tmp / f"{t:05d}.png")
        if progress is not None:
            progress(i + 1, num_clips)
    meta = {"generator": "vpcli.data.camera_motion", "config": config.to_dict(), "seed": int(seed),
            "num_clips": int(num_clips), "format": format, "fps": fps,
            "held_out_photographs": list(HELD_OUT) if config.photos == "train" else "this set shows them"}
    check_overwrite(out / "meta.json", True)
    write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    return paths
