"""Procedural synthetic driving scenes with *exact* optical flow, occlusion masks and labels.

A camera drives forward along a street: road with lane marks (and sometimes a parking strip and a
zebra crossing), sidewalks (sometimes with a bike lane), grass verges, buildings with windows,
walls, fences, hedges, trees, street lights, traffic signs and lights, sky with clouds, cars /
trucks / buses in both directions (each with its own velocity), parked cars, walking and standing
pedestrians, cyclists. Every frame comes with RGB (uint8), Cityscapes train-id labels (road,
sidewalk, building, wall, fence, pole, traffic light / sign, vegetation, terrain, sky, person,
rider, car, truck, bus, bicycle; never 255), camera depth, instance ids, forward flow t -> t+1,
backward flow t+1 -> t, and forward / backward occlusion masks.

Scene model (how exactness is obtained)
---------------------------------------
World axes: x right, y up, z forward along the street; the ground is the plane y = 0. Everything
else is an *analytic primitive*: axis-aligned boxes (buildings, car bodies and cabins, people's
legs / torso / head, poles, signs, trunks, walls, hedges), zero-thickness boxes with a cut-out
pattern (fences, bicycles) and axis-aligned ellipsoids (tree crowns). The sky lies at infinity.
Objects move by pure translation at constant velocity; the camera follows a smooth rigid
trajectory (forward speed with a little acceleration, and -- scaled by ``camera_wobble`` --
lateral drift, yaw and pitch oscillation). Rendering is ray casting: for each pixel centre the
nearest analytic hit gives a primitive and a 3-D point P.

* Colour is a deterministic function of the **surface point in the primitive's own frame**
  (procedural textures: asphalt / paver / grass noise, lane marks, brick-panel facades with
  windows, foliage noise, car paint with windows, wheels and lights, clothes ...) times a lighting
  term that depends only on the surface normal and static shadows (fixed sun; buildings, trees
  and parked cars cast soft shadows onto the ground through a shadow map in ground coordinates);
  the sky colour depends only on the world direction. So a 3-D point has the same colour in
  every frame in which it is seen. There is no antialiasing (one ray per pixel centre), no fog and
  no specular term: each of those would make a point's colour depend on the view.
* Forward flow at pixel x of frame t: P moves with its primitive's velocity to P' (static world:
  P' = P) and is projected with camera t+1: ``flow = project_{t+1}(P') - x``. Sky points are
  directions and only rotate. The backward flow is the same with time reversed.
* Occlusion: a pixel of frame t is occluded in t+1 when P' projects outside the image (pixel
  centres span ``[0, W-1] x [0, H-1]``), behind the camera, or when a ray cast **exactly** through
  the projected sub-pixel position in frame t+1 hits something nearer than P' (relative depth
  tolerance 1e-6, float64 geometry). Comparing against the analytic hit at the exact sub-pixel
  position, not a rendered depth map, avoids false positives on slanted surfaces. Backward
  occlusion (dis-occlusion) is the same from t+1 to t.

Consequences you can rely on: for every non-occluded pixel, ``I_t(x) == shade_{t+1}(x + F(x))``
exactly (before 8-bit quantisation); bilinear warping of the rendered ``I_{t+1}`` reproduces
``I_t`` up to the interpolation error of the texture; ``F_fwd(x) + F_bwd(x + F_fwd(x)) = 0`` up to
float precision; labels and instance ids are carried along the flow.

Flow values of occluded pixels are still the motion of the surface point (outside the image for
points leaving the frame); a point that moves behind the camera is projected with its depth
clamped to 1 cm so the value stays finite. Depth is the camera-frame z (``inf`` for sky).

Randomness: ``render_sequence(config, seed)`` uses ``numpy.random.default_rng(seed)`` only, so the
same seed gives bit-identical output on the same machine and NumPy version. ``generate`` derives
sequence ``i``'s seed from a SHA-256 hash of ``(seed, i)``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vpcli.errors import ConfigError, OutputError
from vpcli.io.atomic import atomic_dir, check_overwrite, check_writable_dir

GENERATOR_VERSION = "1.0.0"

__all__ = [
    "SynthStreetConfig", "SynthSequence", "render_sequence", "write_sequence", "generate",
    "sequence_seed", "CLASS_NAMES", "GENERATOR_VERSION",
]

CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN, VEGETATION, TERRAIN,
 SKY, PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(19)

# Classes that get instance ids (Cityscapes "things").
_THING_CLASSES = (PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE)

# Materials (how a primitive is shaded); the label comes from the primitive's class.
(M_PLAIN, M_BUILDING, M_CARBODY, M_CABIN, M_BUS, M_SKIN, M_CLOTH, M_SIGN, M_TLIGHT, M_FOLIAGE,
 M_FENCE, M_BIKE) = range(12)
# Cut-out patterns of zero-thickness x = const planes (only the pattern is solid).
_CUT_NONE, _CUT_FENCE, _CUT_BIKE = 0, 1, 2

_BOX, _ELLIPSOID = 1, 2
_SKY_ID, _GROUND_ID = 0, 1      # pseudo-primitives at the start of the primitive table
_NEAR = 0.01                    # m; depth clamp for points that move behind the camera
_DEPTH_RTOL = 1e-6              # relative depth tolerance of the occlusion test
_TILE = 256                     # noise tile size (texels, power of two)


# ============================================================================ configuration

@dataclass
class SynthStreetConfig:
    """What to render. Every sequence samples its own layout, textures and lighting from the seed.

    ``camera_speed``: range (m/s) the forward speed is drawn from. ``camera_wobble``: scales the
    lateral drift, yaw and pitch oscillation of the camera (0 = pure forward translation with a
    fixed pitch). ``car_density`` / ``pedestrian_density``: multipliers of the default numbers.
    ``exposure_drift``: relative amplitude of a slow global gain change *within* a sequence (0 =
    constant exposure; anything else breaks brightness constancy by design -- the per-frame gain
    is returned in ``SynthSequence.exposure`` so a test or loss can undo it). ``view_distance``:
    how far (m) beyond the last camera position the street is furnished. ``shadows``: static
    shadows on the ground.
    """

    height: int = 128
    width: int = 256
    length: int = 30
    fps: float = 10.0
    hfov_deg: float = 70.0
    camera_speed: tuple[float, float] = (4.0, 12.0)
    camera_wobble: float = 1.0
    car_density: float = 1.0
    pedestrian_density: float = 1.0
    exposure_drift: float = 0.0
    view_distance: float = 180.0
    shadows: bool = True

    def __post_init__(self):
        def bad(name, value, want):
            raise ConfigError(f"synth-street config: {name} must be {want}, got {value!r}",
                              f"fix '{name}' in the config")

        for name, lo, hi in (("height", 8, 4096), ("width", 8, 4096), ("length", 2, 100_000)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                bad(name, v, f"an integer in [{lo}, {hi}]")
            setattr(self, name, int(v))

        def num(name, lo, hi, lo_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                bad(name, v, "a number")
            v = float(v)
            if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
                bad(name, getattr(self, name), f"in {'(' if lo_open else '['}{lo}, {hi}]")
            setattr(self, name, v)

        num("fps", 0.0, 1000.0, lo_open=True)
        num("hfov_deg", 10.0, 150.0)
        num("camera_wobble", 0.0, 10.0)
        num("car_density", 0.0, 10.0)
        num("pedestrian_density", 0.0, 10.0)
        num("exposure_drift", 0.0, 0.9)
        num("view_distance", 20.0, 2000.0)
        cs = self.camera_speed
        try:
            lo, hi = (float(x) for x in cs)
        except (TypeError, ValueError):
            bad("camera_speed", cs, "a pair (min, max) of speeds in m/s")
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi <= 60.0):
            bad("camera_speed", cs, "a pair (min, max) with 0 <= min <= max <= 60 m/s")
        self.camera_speed = (lo, hi)
        if not isinstance(self.shadows, (bool, np.bool_)):
            bad("shadows", self.shadows, "true or false")
        self.shadows = bool(self.shadows)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["camera_speed"] = list(self.camera_speed)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SynthStreetConfig:
        """Build from a mapping (YAML / meta.json); unknown keys are an error, not ignored."""
        if not isinstance(d, dict):
            raise ConfigError(f"synth-street config must be a mapping, got {type(d).__name__}",
                              "pass key: value pairs")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"synth-street config: unknown key(s) {', '.join(map(repr, unknown))}",
                              f"valid keys: {', '.join(sorted(names))}")
        return cls(**d)


@dataclass
class SynthSequence:
    """One rendered clip. Shapes use T frames of H x W pixels.

    rgb ``uint8 (T,H,W,3)``; labels ``int64 (T,H,W)`` Cityscapes train ids; flow_forward
    ``float32 (T-1,2,H,W)`` (u, v) in pixels from frame t to t+1; flow_backward ``float32
    (T-1,2,H,W)`` from frame t+1 to t (index t); occlusion_forward ``bool (T-1,H,W)`` pixels of t
    not visible in t+1; occlusion_backward ``bool (T-1,H,W)`` pixels of t+1 not visible in t.
    Extras: depth ``float32 (T,H,W)`` camera z in metres (inf = sky); instances ``int32 (T,H,W)``
    (0 = stuff, >0 one id per person / vehicle); intrinsics ``float64 (3,3)``; poses ``float64
    (T,4,4)`` world -> camera (camera x right, y down, z forward; world x right, y up, z forward);
    exposure ``float32 (T,)`` global gain of each frame relative to the sequence's base exposure.
    """

    rgb: np.ndarray
    labels: np.ndarray
    flow_forward: np.ndarray
    flow_backward: np.ndarray
    occlusion_forward: np.ndarray
    occlusion_backward: np.ndarray
    fps: float
    depth: np.ndarray | None = None
    instances: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    poses: np.ndarray | None = None
    exposure: np.ndarray | None = None
    seed: int | None = None
    config: SynthStreetConfig | None = None

    def __len__(self) -> int:
        return int(self.rgb.shape[0])


# ============================================================================ scene description

@dataclass
class _Camera:
    pos: np.ndarray   # (3,) world position
    R: np.ndarray     # (3,3) world -> camera rotation (rows: right, down, forward)


class _Scene:
    """Primitive table (struct of arrays) plus camera path, textures and lighting of one sequence.

    Index 0 is the sky and 1 the ground (pseudo-primitives); real primitives start at 2.
    """

    def __init__(self):
        self.rows: list[tuple] = [self._row(0, SKY, M_PLAIN), self._row(0, ROAD, M_PLAIN)]

    @staticmethod
    def _row(kind, cls, mat, lo=(0, 0, 0), hi=(0, 0, 0), vel=(0, 0, 0), c0=(0, 0, 0), c1=(0, 0, 0),
             c2=(0, 0, 0), par=(), inst=0, cutout=_CUT_NONE):
        p = np.zeros(8)
        p[:len(par)] = par
        return (kind, cls, mat, lo, hi, vel, c0, c1, c2, p, inst, cutout)

    def add_box(self, lo, hi, cls, mat, *, vel=(0, 0, 0), c0=(0.5, 0.5, 0.5), c1=(0, 0, 0),
                c2=(0, 0, 0), par=(), inst=0, cutout=_CUT_NONE):
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        self.rows.append(self._row(_BOX, cls, mat, lo, hi, vel, c0, c1, c2, par, inst, cutout))

    def add_ellipsoid(self, center, radii, cls, mat, *, vel=(0, 0, 0), c0=(0.5, 0.5, 0.5),
                      c1=(0, 0, 0), c2=(0, 0, 0), par=(), inst=0):
        c, r = np.asarray(center, float), np.asarray(radii, float)
        self.rows.append(self._row(_ELLIPSOID, cls, mat, c - r, c + r, vel, c0, c1, c2, par, inst))

    def freeze(self, fps: float):
        cols = list(zip(*self.rows))
        self.kind = np.array(cols[0], np.int8)
        self.cls = np.array(cols[1], np.int64)
        self.mat = np.array(cols[2], np.int16)
        self.lo = np.array(cols[3], np.float64).reshape(-1, 3)
        self.hi = np.array(cols[4], np.float64).reshape(-1, 3)
        self.dpos = np.array(cols[5], np.float64).reshape(-1, 3) / fps  # displacement per frame
        self.c0 = np.array(cols[6], np.float64).reshape(-1, 3)
        self.c1 = np.array(cols[7], np.float64).reshape(-1, 3)
        self.c2 = np.array(cols[8], np.float64).reshape(-1, 3)
        self.par = np.stack(cols[9])
        self.inst = np.array(cols[10], np.int32)
        self.cutout = np.array(cols[11], np.int8)
        del self.rows

    def bounds(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Primitive AABBs at frame k (objects translate with constant velocity)."""
        off = k * self.dpos
        return self.lo + off, self.hi + off


def sequence_seed(seed: int, index: int) -> int:
    """The seed of sequence ``index`` of a dataset generated with ``seed`` (stable, 63-bit)."""
    text = f"vpcli.synth_street|{int(seed)}|{int(index)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def _noise_tile(rng, beta: float) -> np.ndarray:
    """Periodic fractal noise in [0, 1]: white noise shaped by a 1/f^beta power spectrum."""
    white = rng.standard_normal((_TILE, _TILE))
    fy = np.fft.fftfreq(_TILE)[:, None]
    fx = np.fft.rfftfreq(_TILE)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spec = np.fft.rfft2(white) * f ** (-beta / 2)
    spec[0, 0] = 0.0
    n = np.fft.irfft2(spec, s=(_TILE, _TILE))
    n = 0.5 + n / (6 * n.std())
    return np.clip(n, 0.0, 1.0).ravel()  # flat, indexed as [row * _TILE + col]


def _hsv(h, s, v):
    """One HSV colour (h in turns) -> RGB tuple in [0, 1]."""
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


_CAR_PAINTS = [(0.92, 0.92, 0.9), (0.08, 0.08, 0.09), (0.55, 0.56, 0.58), (0.7, 0.71, 0.72),
               (0.6, 0.08, 0.07), (0.1, 0.2, 0.5), (0.15, 0.3, 0.2), (0.75, 0.6, 0.2),
               (0.3, 0.3, 0.33), (0.85, 0.85, 0.8)]
_SKIN = [(0.95, 0.78, 0.65), (0.85, 0.65, 0.5), (0.65, 0.45, 0.32), (0.45, 0.3, 0.2)]


def _build_scene(cfg: SynthStreetConfig, seed: int) -> _Scene:
    """Sample one street: layout, objects, camera path, textures and light."""
    rng = np.random.default_rng(seed)
    U = rng.uniform
    sc = _Scene()
    sc.H, sc.W, sc.T, sc.fps = cfg.height, cfg.width, cfg.length, cfg.fps
    sc.f = (cfg.width / 2) / math.tan(math.radians(cfg.hfov_deg) / 2)
    sc.cx, sc.cy = (cfg.width - 1) / 2, (cfg.height - 1) / 2
    dur = (cfg.length - 1) / cfg.fps
    inst_counter = [0]

    def new_inst():
        inst_counter[0] += 1
        return inst_counter[0]

    # ---- road layout (metres) ----
    lane_w = U(2.9, 3.6)
    lanes = int(rng.choice([1, 2], p=[0.55, 0.45]))        # lanes per direction
    park_w = 2.2 if rng.random() < 0.5 else 0.0
    road_half = lanes * lane_w + park_w
    verge = [0.0 if rng.random() < 0.5 else U(1.0, 2.5) for _ in range(2)]   # [left, right]
    walk = [U(2.0, 5.0) for _ in range(2)]
    edge = [road_half + verge[i] + walk[i] for i in range(2)]               # start of plots
    bike = [walk[i] >= 3.0 and rng.random() < 0.5 for i in range(2)]       # bike lane, outer sidewalk
    g = sc.ground = dict(lane_w=lane_w, lanes=lanes, park_w=park_w, road_half=road_half,
                         verge=np.array(verge), edge=np.array(edge), bike=np.array(bike), bike_w=1.4)
    g["bike_col"] = np.array(_hsv(U(0.0, 0.04), U(0.35, 0.6), U(0.35, 0.55)))
    asphalt = U(0.22, 0.42)
    g["road_col"] = np.array([asphalt, asphalt, asphalt * U(0.97, 1.06)])
    g["centre_style"] = int(rng.integers(3))      # 0 double yellow, 1 dashed white, 2 solid white
    g["dash"] = (U(6.0, 12.0), U(0.3, 0.5))        # period, duty
    pav = U(0.5, 0.75)
    g["walk_col"] = np.array([pav * U(0.95, 1.05), pav * U(0.93, 1.0), pav * U(0.85, 1.0)])
    g["paver"] = U(0.4, 0.9)
    g["grass_col"] = np.array(_hsv(U(0.18, 0.3), U(0.45, 0.7), U(0.35, 0.55)))
    g["dirt_col"] = np.array(_hsv(U(0.07, 0.11), U(0.35, 0.6), U(0.3, 0.45)))

    # ---- camera path ----
    speed = U(*cfg.camera_speed)
    accel = U(-0.8, 0.8) if speed > 0 else 0.0
    if speed + accel * dur < 0:
        accel = -speed / dur
    ego_x = (int(rng.integers(lanes)) + 0.5) * lane_w + U(-0.2, 0.2)
    cam_h = U(1.3, 1.8)
    w = cfg.camera_wobble
    lat_a, lat_p, lat_ph = w * U(0.0, 0.25), U(3.0, 8.0), U(0, 2 * math.pi)
    yaw_a, yaw_p, yaw_ph = w * math.radians(U(0.2, 1.0)), U(2.0, 6.0), U(0, 2 * math.pi)
    pit_a, pit_p, pit_ph = w * math.radians(U(0.1, 0.4)), U(0.8, 2.0), U(0, 2 * math.pi)
    pitch0 = math.radians(U(-1.0, 3.0))
    sc.cams = []
    for k in range(cfg.length):
        t = k / cfg.fps
        pos = np.array([ego_x + lat_a * math.sin(2 * math.pi * t / lat_p + lat_ph), cam_h,
                        speed * t + 0.5 * accel * t * t])
        yaw = yaw_a * math.sin(2 * math.pi * t / yaw_p + yaw_ph)
        pitch = pitch0 + pit_a * math.sin(2 * math.pi * t / pit_p + pit_ph)
        fwd = np.array([math.sin(yaw) * math.cos(pitch), -math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
        right = np.array([math.cos(yaw), 0.0, -math.sin(yaw)])
        down = np.cross(right, fwd)
        sc.cams.append(_Camera(pos, np.stack([right, down, fwd])))
    travel = speed * dur + 0.5 * accel * dur * dur
    z_lo, z_hi = -40.0, travel + cfg.view_distance
    sc.z_range = (z_lo, z_hi)

    # ---- light ----
    elev, azim = math.radians(U(20, 65)), U(0, 2 * math.pi)
    sc.sun = np.array([math.cos(elev) * math.sin(azim), math.sin(elev), math.cos(elev) * math.cos(azim)])
    sc.ambient = U(0.35, 0.6)
    warm = U(0.0, 0.12)
    sc.sun_col = np.array([1.0 + warm, 1.0, 1.0 - warm])
    sc.amb_col = np.array([0.9, 0.95, 1.08])
    sc.exposure = U(0.85, 1.2)
    sc.sky_horizon = np.array(_hsv(U(0.52, 0.62), U(0.05, 0.25), U(0.8, 0.98)))
    sc.sky_zenith = np.array(_hsv(U(0.55, 0.63), U(0.35, 0.75), U(0.55, 0.85)))
    sc.cloud_amount = U(0.0, 0.9)
    sc.tiles = [_noise_tile(rng, 1.4), _noise_tile(rng, 2.4), _noise_tile(rng, 1.8)]
    drift_ph = U(0, 2 * math.pi)
    sc.gain = np.array([1.0 + cfg.exposure_drift * math.sin(2 * math.pi * k / max(cfg.length, 8) + drift_ph)
                        for k in range(cfg.length)])

    # ---- buildings, yards, fences, walls, hedges (per side) ----
    plot_bounds = [[z_lo - 50], [z_lo - 50]]   # z where plot type changes
    plot_type = [[SIDEWALK], [SIDEWALK]]
    casters = []                                # static boxes / ellipsoids that cast shadows
    for side_i, s in enumerate((-1.0, 1.0)):
        z = z_lo - float(U(0, 20))
        while z < z_hi:
            if rng.random() < 0.18:            # alley: open ground, maybe a building further back
                wz = U(3.0, 10.0)
                plot_bounds[side_i].append(z)
                plot_type[side_i].append(TERRAIN if rng.random() < 0.4 else SIDEWALK)
                if rng.random() < 0.6:
                    x0 = edge[side_i] + U(12, 25)
                    hb = U(8, 25)
                    lo, hi = (s * x0, 0.0, z), (s * (x0 + U(8, 15)), hb, z + wz)
                    _add_building(sc, rng, lo, hi)
                    casters.append((lo, hi))
                z += wz
                continue
            wz = U(8.0, 30.0)
            yard = U(2.0, 6.0) if rng.random() < 0.3 else 0.0
            plot_bounds[side_i].append(z)
            plot_type[side_i].append(TERRAIN if (yard > 0 and rng.random() < 0.6) else SIDEWALK)
            x0 = edge[side_i] + yard + U(0.0, 0.6)
            hb = U(5.0, 14.0) if rng.random() < 0.6 else U(14.0, 32.0)
            lo, hi = (s * x0, 0.0, z), (s * (x0 + U(8.0, 20.0)), hb, z + wz)
            _add_building(sc, rng, lo, hi)
            casters.append((lo, hi))
            if yard > 0:
                xe = s * edge[side_i]
                kind = rng.integers(3)
                if kind == 0:   # fence: zero-thickness plane with slats and rails (cut-out)
                    fh = U(0.9, 1.6)
                    col = _hsv(U(0, 1), U(0.0, 0.3), U(0.25, 0.8))
                    sc.add_box((xe, 0.0, z), (xe, fh, z + wz), FENCE, M_FENCE, c0=col,
                               par=(U(0.15, 0.35), U(0.3, 0.65), U(0.06, 0.12)), cutout=_CUT_FENCE)
                elif kind == 1:  # low wall
                    wh = U(0.5, 1.6)
                    lo, hi = (xe, 0.0, z), (xe + s * 0.3, wh, z + wz)
                    v = U(0.45, 0.75)
                    sc.add_box(lo, hi, WALL, M_PLAIN, c0=(v, v * U(0.95, 1.0), v * U(0.88, 1.0)),
                               par=(0.25, 0.04))
                    casters.append((lo, hi))
                else:            # hedge
                    hh = U(0.8, 1.7)
                    lo, hi = (xe, 0.0, z + 0.3), (xe + s * U(0.6, 1.0), hh, z + wz - 0.3)
                    sc.add_box(lo, hi, VEGETATION, M_FOLIAGE, c0=_hsv(U(0.2, 0.33), U(0.5, 0.8), U(0.12, 0.25)),
                               c1=_hsv(U(0.18, 0.3), U(0.4, 0.7), U(0.3, 0.5)), par=(0.15,))
                    casters.append((lo, hi))
                if rng.random() < 0.5:   # a tree in the yard
                    tx = s * (edge[side_i] + yard * U(0.4, 0.6))
                    casters += _add_tree(sc, rng, tx, z + wz * U(0.2, 0.8), big=True)
            z += wz
    g["plot_bounds"] = [np.array(b) for b in plot_bounds]
    g["plot_type"] = [np.array(t, np.int64) for t in plot_type]

    # ---- street furniture: trees on verges / sidewalks, street lights, signs, traffic lights ----
    for side_i, s in enumerate((-1.0, 1.0)):
        tree_x = road_half + (verge[side_i] / 2 if verge[side_i] > 0 else 0.9)
        if rng.random() < 0.75:
            z = z_lo + U(0, 10)
            spacing = U(7.0, 16.0)
            while z < z_hi:
                if rng.random() < 0.8:
                    casters += _add_tree(sc, rng, s * tree_x, z, big=False)
                z += spacing * U(0.8, 1.2)
        z = z_lo + U(0, 20)
        spacing = U(18.0, 40.0)
        while z < z_hi:                                   # street lights
            x = s * (road_half + 0.45)
            ph = U(6.0, 9.0)
            lo, hi = (x - 0.08, 0.0, z - 0.08), (x + 0.08, ph, z + 0.08)
            v = U(0.3, 0.6)
            sc.add_box(lo, hi, POLE, M_PLAIN, c0=(v, v, v * 1.03), par=(0.1, 0.2))
            casters.append((lo, hi))
            arm = U(1.0, 2.0)
            sc.add_box((x, ph - 0.12, z - 0.05), (x - s * arm, ph, z + 0.05), POLE, M_PLAIN,
                       c0=(v, v, v * 1.03), par=(0.1, 0.2))
            sc.add_box((x - s * (arm - 0.1), ph - 0.25, z - 0.2), (x - s * (arm + 0.45), ph - 0.05, z + 0.2),
                       POLE, M_PLAIN, c0=(0.25, 0.25, 0.27), par=(0.05, 0.2))
            z += spacing * U(0.85, 1.15)
        z = z_lo + U(0, 30)
        while z < z_hi:                                   # traffic signs on their own posts
            x = s * (road_half + U(0.3, 1.2))
            ph = U(2.0, 2.8)
            sc.add_box((x - 0.04, 0.0, z - 0.04), (x + 0.04, ph, z + 0.04), POLE, M_PLAIN,
                       c0=(0.5, 0.5, 0.52), par=(0.1, 0.2))
            kind = int(rng.integers(3))
            col = [(0.8, 0.1, 0.1), (0.1, 0.25, 0.7), (0.95, 0.8, 0.1)][kind]
            half = U(0.28, 0.4)
            sc.add_box((x - half, ph - 0.1, z - 0.1), (x + half, ph + 2 * half - 0.1, z - 0.06),
                       TRAFFIC_SIGN, M_SIGN, c0=col, c1=(0.95, 0.95, 0.95), par=(kind,))
            z += U(25.0, 70.0)
    # A crossing with traffic lights, somewhere ahead of the camera's end position.
    g["crossing"] = None
    if rng.random() < 0.5:
        zc = travel + U(15.0, 60.0)
        g["crossing"] = (zc, U(3.0, 4.5))
        for s in (-1.0, 1.0):
            x = s * (road_half + 0.6)
            ph = U(3.0, 4.0)
            sc.add_box((x - 0.07, 0.0, zc - 0.5), (x + 0.07, ph, zc - 0.36), POLE, M_PLAIN,
                       c0=(0.3, 0.32, 0.3), par=(0.1, 0.2))
            sc.add_box((x - 0.18, ph, zc - 0.55), (x + 0.18, ph + 0.9, zc - 0.3), TRAFFIC_LIGHT, M_TLIGHT,
                       c0=(0.1, 0.1, 0.1), par=(int(rng.integers(3)),))

    # ---- vehicles ----
    def lane_cars(x_center, direction, base_speed, density, z_from, z_to, ego_lane=False):
        z = z_from + U(0, 15)
        while z < z_to:
            L = _add_vehicle(sc, rng, x_center + U(-0.3, 0.3), z, direction,
                             base_speed + U(-1.0, 1.0) if base_speed > 0 else 0.0, new_inst)
            gap = L + 2.0 * 2.0 * dur + U(3.0, 25.0) / max(density, 1e-3)
            z += gap
            if ego_lane:
                break

    cd = cfg.car_density
    if cd > 0:
        cam_z_end = travel
        for j in range(lanes):
            xj = (j + 0.5) * lane_w
            if abs(xj - ego_x) < lane_w / 2:          # ego lane: a lead car that keeps ahead
                if rng.random() < min(1.0, 0.7 * cd):
                    vs = speed + abs(accel) * dur + U(0.5, 3.0)
                    lane_cars(xj, 1, vs, cd, U(8.0, 25.0), U(9.0, 30.0), ego_lane=True)
            else:
                lane_cars(xj, 1, U(3.0, 14.0), cd, z_lo, z_hi)
            lane_cars(-xj, -1, U(5.0, 14.0), cd, z_lo + cam_z_end, z_hi + 20.0 * dur)
        if park_w > 0:                                  # parked cars (static; they cast shadows)
            for s in (-1.0, 1.0):
                z = z_lo + U(0, 8)
                while z < z_hi:
                    if rng.random() < 0.6 * min(cd, 1.5):
                        x = s * (lanes * lane_w + park_w / 2 + U(-0.1, 0.1))
                        L = _add_vehicle(sc, rng, x, z, int(rng.choice([-1, 1])), 0.0, new_inst,
                                         allow_big=False)
                        casters.append(((x - 0.9, 0.0, z), (x + 0.9, 1.4, z + L)))
                        z += L + U(0.8, 3.0)
                    else:
                        z += U(4.0, 8.0)

    # ---- pedestrians on the sidewalks ----
    pd = cfg.pedestrian_density
    if pd > 0:
        for side_i, s in enumerate((-1.0, 1.0)):
            inner, outer = road_half + verge[side_i] + 0.4, edge[side_i] - 0.4 - 1.4 * bike[side_i]
            z = z_lo + U(0, 10)
            while z < z_hi:
                x = s * U(inner, max(inner, outer))
                v = 0.0 if rng.random() < 0.3 else U(0.8, 1.7) * float(rng.choice([-1, 1]))
                _add_person(sc, rng, x, z, (0.0, 0.0, v), new_inst)
                if rng.random() < 0.25:                 # a companion walking alongside
                    _add_person(sc, rng, x - s * 0.6, z + U(-0.3, 0.3), (0.0, 0.0, v), new_inst)
                z += U(6.0, 30.0) / pd
            if bike[side_i]:                            # cyclists in the bike lane
                z = z_lo + U(0, 20)
                while z < z_hi:
                    direction = s if rng.random() < 0.75 else -s     # mostly keep to the right
                    _add_cyclist(sc, rng, s * (edge[side_i] - 0.7 + U(-0.1, 0.1)), z, direction,
                                 U(3.5, 7.0), new_inst)
                    z += U(15.0, 60.0) / pd
        if g["crossing"] is not None:                   # people waiting at the crossing
            zc, wc = g["crossing"]
            for s in (-1.0, 1.0):
                for _ in range(int(rng.integers(0, 3))):
                    _add_person(sc, rng, s * (road_half + U(0.5, 1.5)), zc + U(0, wc), (0, 0, 0), new_inst)

    sc.freeze(cfg.fps)
    sc.shadow = _shadow_map(sc, casters, edge) if cfg.shadows else None
    return sc


def _add_building(sc: _Scene, rng, lo, hi):
    U = rng.uniform
    style = int(rng.integers(3))            # 0 plaster, 1 brick, 2 concrete panels
    if style == 1:
        col = _hsv(U(0.0, 0.07), U(0.45, 0.7), U(0.35, 0.6))
    elif style == 0:
        col = _hsv(U(0.0, 1.0), U(0.05, 0.35), U(0.55, 0.9))
    else:
        v = U(0.4, 0.75)
        col = (v, v * U(0.97, 1.02), v * U(0.94, 1.04))
    glass = _hsv(U(0.5, 0.65), U(0.1, 0.4), U(0.12, 0.35))
    trim = _hsv(U(0, 1), U(0.0, 0.2), U(0.7, 0.95)) if rng.random() < 0.6 else tuple(np.array(col) * 0.7)
    floor_h = U(2.8, 3.6)
    spacing = U(2.0, 4.0)
    sc.add_box(lo, hi, BUILDING, M_BUILDING, c0=col, c1=glass, c2=trim,
               par=(floor_h, spacing, U(0.3, 0.65), U(0.35, 0.65), U(0, spacing), U(0.15, 0.3),
                    style, float(rng.random() < 0.5)))


def _add_tree(sc: _Scene, rng, x, z, big: bool):
    U = rng.uniform
    th = U(2.6, 3.6) if not big else U(2.8, 4.5)
    tw = U(0.2, 0.35) if not big else U(0.3, 0.5)
    lo, hi = (x - tw / 2, 0.0, z - tw / 2), (x + tw / 2, th + 0.5, z + tw / 2)
    sc.add_box(lo, hi, VEGETATION, M_PLAIN, c0=_hsv(U(0.05, 0.1), U(0.3, 0.6), U(0.18, 0.35)), par=(0.3, 0.05))
    r = U(1.2, 2.2) if not big else U(2.0, 3.5)
    ry = r * U(1.0, 1.4)
    cy = max(th + 0.6 * ry, 2.6 + ry)      # crown bottom >= 2.6 m: never reaches the camera
    dark = _hsv(U(0.2, 0.33), U(0.5, 0.85), U(0.1, 0.22))
    light = _hsv(U(0.17, 0.3), U(0.4, 0.7), U(0.3, 0.55))
    sc.add_ellipsoid((x, cy, z), (r, ry, r * U(0.85, 1.15)), VEGETATION, M_FOLIAGE, c0=dark, c1=light,
                     par=(U(0.12, 0.25),))
    return [(lo, hi), ((x - r, cy - ry, z - r), (x + r, cy + ry, z + r), "ellipsoid")]


def _add_vehicle(sc: _Scene, rng, x, z, direction, speed, new_inst, allow_big=True) -> float:
    """A car (body + cabin), truck (cab + cargo box) or bus along z; returns its length."""
    U = rng.uniform
    vel = (0.0, 0.0, direction * speed)
    r = rng.random() if allow_big else 0.0
    inst = new_inst()
    paint = _CAR_PAINTS[int(rng.integers(len(_CAR_PAINTS)))]
    paint = tuple(np.clip(np.array(paint) * U(0.9, 1.1), 0, 1))
    glass = _hsv(U(0.5, 0.6), U(0.1, 0.3), U(0.08, 0.2))
    if r < 0.86:    # car
        L, Wd, hb = U(3.8, 4.9), U(1.65, 1.9), U(0.75, 0.9)
        sc.add_box((x - Wd / 2, 0.0, z), (x + Wd / 2, hb, z + L), CAR, M_CARBODY, vel=vel, c0=paint,
                   par=(direction, U(0.3, 0.36)), inst=inst)
        cl = L * U(0.45, 0.55)
        cz = z + L * U(0.25, 0.32) if direction > 0 else z + L - L * U(0.25, 0.32) - cl
        sc.add_box((x - Wd * 0.44, hb, cz), (x + Wd * 0.44, hb + U(0.45, 0.6), cz + cl), CAR, M_CABIN,
                   vel=vel, c0=paint, c1=glass, par=(direction,), inst=inst)
        return L
    if r < 0.93:    # truck: cab + cargo box
        L, Wd = U(6.0, 8.5), U(2.2, 2.5)
        cab_l = 2.0
        cargo = _hsv(U(0, 1), U(0.0, 0.5), U(0.5, 0.95))
        zc = z + L - cab_l if direction > 0 else z
        sc.add_box((x - Wd / 2, 0.0, zc), (x + Wd / 2, U(2.4, 2.9), zc + cab_l), TRUCK, M_BUS, vel=vel,
                   c0=paint, c1=glass, par=(direction, 1.0), inst=inst)
        zb = z if direction > 0 else z + cab_l + 0.1
        sc.add_box((x - Wd / 2, 0.0, zb), (x + Wd / 2, U(3.0, 3.6), zb + L - cab_l - 0.1), TRUCK, M_PLAIN,
                   vel=vel, c0=cargo, par=(0.1, 0.2), inst=inst)
        return L
    L, Wd = U(10.0, 12.5), U(2.45, 2.55)      # bus
    sc.add_box((x - Wd / 2, 0.0, z), (x + Wd / 2, U(2.9, 3.2), z + L), BUS, M_BUS, vel=vel, c0=paint,
               c1=glass, par=(direction, 0.0), inst=inst)
    return L


def _add_person(sc: _Scene, rng, x, z, vel, new_inst):
    """Legs, torso, head as boxes; facing along z (the walking direction)."""
    U = rng.uniform
    s = U(0.85, 1.1)
    inst = new_inst()
    pants = _hsv(U(0, 1), U(0.1, 0.6), U(0.1, 0.5))
    shirt = _hsv(U(0, 1), U(0.2, 0.9), U(0.2, 0.95))
    skin = _SKIN[int(rng.integers(len(_SKIN)))]
    hair = _hsv(U(0.05, 0.1), U(0.3, 0.7), U(0.05, 0.4))
    leg_h, torso_h, head_h = 0.85 * s, 0.6 * s, 0.24 * s
    for dx in (-0.11 * s, 0.11 * s):       # two legs with a gap between them
        sc.add_box((x + dx - 0.075 * s, 0.0, z - 0.08 * s), (x + dx + 0.075 * s, leg_h, z + 0.08 * s),
                   PERSON, M_CLOTH, vel=vel, c0=pants, inst=inst)
    sc.add_box((x - 0.22 * s, leg_h, z - 0.12 * s), (x + 0.22 * s, leg_h + torso_h, z + 0.12 * s),
               PERSON, M_CLOTH, vel=vel, c0=shirt, inst=inst)
    y0 = leg_h + torso_h + 0.02 * s
    sc.add_box((x - 0.09 * s, y0, z - 0.1 * s), (x + 0.09 * s, y0 + head_h, z + 0.1 * s),
               PERSON, M_SKIN, vel=vel, c0=skin, c1=hair, inst=inst)


def _add_cyclist(sc: _Scene, rng, x, z, direction, speed, new_inst):
    """A bicycle (cut-out plane at x) and its rider (legs, torso, arms, helmeted head)."""
    U = rng.uniform
    vel = (0.0, 0.0, direction * speed)
    L = 1.75
    sc.add_box((x, 0.0, z), (x, 1.1, z + L), BICYCLE, M_BIKE, vel=vel,
               c0=_hsv(U(0, 1), U(0.3, 0.9), U(0.3, 0.9)), par=(direction,), inst=new_inst(),
               cutout=_CUT_BIKE)
    inst = new_inst()

    def span(a0, a1):   # positions along the bike (from its rear) -> world z range
        return (z + a0, z + a1) if direction > 0 else (z + L - a1, z + L - a0)

    jacket = _hsv(U(0, 1), U(0.3, 0.9), U(0.2, 0.9))
    pants = _hsv(U(0, 1), U(0.1, 0.5), U(0.1, 0.4))
    skin = _SKIN[int(rng.integers(len(_SKIN)))]
    helmet = _hsv(U(0, 1), U(0.0, 0.8), U(0.3, 0.95))
    z0, z1 = span(0.7, 0.88)
    for x0, x1 in ((x - 0.17, x - 0.05), (x + 0.05, x + 0.17)):
        sc.add_box((x0, 0.3, z0), (x1, 0.93, z1), RIDER, M_CLOTH, vel=vel, c0=pants, inst=inst)
    z0, z1 = span(0.62, 0.98)
    sc.add_box((x - 0.2, 0.95, z0), (x + 0.2, 1.5, z1), RIDER, M_CLOTH, vel=vel, c0=jacket, inst=inst)
    z0, z1 = span(0.9, 1.2)
    sc.add_box((x - 0.23, 1.1, z0), (x + 0.23, 1.2, z1), RIDER, M_CLOTH, vel=vel, c0=jacket, inst=inst)
    z0, z1 = span(0.88, 1.1)
    sc.add_box((x - 0.1, 1.52, z0), (x + 0.1, 1.76, z1), RIDER, M_SKIN, vel=vel, c0=skin, c1=helmet, inst=inst)


def _shadow_map(sc: _Scene, casters, edge) -> dict:
    """Static shadows on the ground: each caster's silhouette projected along the sun direction.

    A function of ground coordinates only, so shading stays view-independent. Soft edges come
    from blurring the rasterised map (a penumbra of about 0.3 m).
    """
    import cv2

    res = 0.1
    x0 = -(max(edge) + 45.0)
    z0, z1 = sc.z_range[0] - 60.0, sc.z_range[1] + 10.0
    nx, nz = int(2 * -x0 / res) + 1, int((z1 - z0) / res) + 1
    m = np.zeros((nz, nx), np.uint8)
    s = sc.sun
    bits = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], float)
    ang = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    for c in casters:
        lo, hi = np.asarray(c[0], float), np.asarray(c[1], float)
        if len(c) == 3:   # ellipsoid: points on its horizontal and vertical great circles
            cen, r = (lo + hi) / 2, (hi - lo) / 2
            ca, sa = np.cos(ang), np.sin(ang)
            pts = np.concatenate([np.stack([ca, 0 * ca, sa], 1), np.stack([ca, sa, 0 * ca], 1),
                                  np.stack([0 * ca, ca, sa], 1)]) * r + cen
        else:
            pts = lo + bits * (hi - lo)
        ground = pts[:, [0, 2]] - pts[:, 1:2] / s[1] * s[[0, 2]]   # (n, 2) x, z on y = 0
        pix = np.round(np.stack([(ground[:, 0] - x0) / res, (ground[:, 1] - z0) / res], 1) * 4).astype(np.int32)
        hull = cv2.convexHull(pix)
        cv2.fillConvexPoly(m, hull, 255, lineType=cv2.LINE_8, shift=2)
    mf = cv2.GaussianBlur(m.astype(np.float32) / 255.0, (0, 0), 1.5)
    return dict(map=mf.ravel(), nx=nx, nz=nz, x0=x0, z0=z0, res=res)


# ============================================================================ ray casting

def _ray_dirs(sc: _Scene, cam: _Camera, px, py):
    """World ray directions for pixel coords, scaled so that the camera-frame z is 1 (t = depth)."""
    a = (np.asarray(px, np.float64) - sc.cx) / sc.f
    b = (np.asarray(py, np.float64) - sc.cy) / sc.f
    R = cam.R  # rows right, down, forward: d_world = R^T (a, b, 1)
    return (R[0, 0] * a + R[1, 0] * b + R[2, 0],
            R[0, 1] * a + R[1, 1] * b + R[2, 1],
            R[0, 2] * a + R[1, 2] * b + R[2, 2])


_CORNERS = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], bool)
_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8)
                   if (a ^ b).bit_count() == 1])          # the 12 box edges


def _screen_ranges(sc: _Scene, cam: _Camera, lo, hi):
    """Conservative image-column / row range of each AABB (near-plane clipped); inf if unseen."""
    corners = np.where(_CORNERS[None], hi[:, None, :], lo[:, None, :])     # (N, 8, 3)
    pc = (corners - cam.pos) @ cam.R.T                                       # camera coords
    z = pc[..., 2]
    near = 1e-4
    a, b = pc[:, _EDGES[:, 0]], pc[:, _EDGES[:, 1]]                          # (N, 12, 3)
    za, zb = a[..., 2], b[..., 2]
    cross = (za - near) * (zb - near) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(cross, (near - za) / (zb - za), 0.0)
    clip = a + s[..., None] * (b - a)
    pts = np.concatenate([pc, clip], axis=1)                                 # (N, 20, 3)
    ok = np.concatenate([z >= near, cross], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = sc.f * pts[..., 0] / pts[..., 2] + sc.cx
        v = sc.f * pts[..., 1] / pts[..., 2] + sc.cy
    umin = np.where(ok, u, np.inf).min(1)
    umax = np.where(ok, u, -np.inf).max(1)
    vmin = np.where(ok, v, np.inf).min(1)
    vmax = np.where(ok, v, -np.inf).max(1)
    seen = ok.any(1) & (umax >= -0.5) & (umin <= sc.W - 0.5) & (vmax >= -0.5) & (vmin <= sc.H - 0.5)
    return umin, umax, vmin, vmax, seen


_BIG = 600   # cells; primitives covering more are tested one by one on array views, the rest in a batch


def _cast(sc: _Scene, k: int, px, py, with_prim: bool = True, grid: bool = False):
    """Nearest hit for rays through image points ``(px, py)`` of frame k (inside the image).

    Returns (depth, prim, d): depth is the camera-frame z of the hit (inf for sky), prim the
    primitive index (0 sky, 1 ground; None unless ``with_prim``) and d the world ray directions
    (each in the order of the input points).

    Points are bucketed into pixel cells (cell (c, r) holds points with floor(x) = c, floor(y) = r;
    ``grid=True`` says the points are exactly the pixel centres in column-major order). A
    primitive is tested only against the points in the cells its screen rectangle overlaps:
    large primitives one at a time on contiguous runs (a 2-D view for the grid, a band of
    columns otherwise), small ones all together as flat (primitive, point) pairs.
    """
    H, W = sc.H, sc.W
    cam = sc.cams[k]
    n = len(px)
    if grid:
        order = None
        start = np.arange(n + 1)
    else:
        col = np.clip(np.floor(px), 0, W - 1).astype(np.int64)
        row = np.clip(np.floor(py), 0, H - 1).astype(np.int64)
        key = col * H + row
        order = np.argsort(key, kind="stable")
        px, py = px[order], py[order]
        start = np.zeros(W * H + 1, np.int64)
        np.cumsum(np.bincount(key, minlength=W * H), out=start[1:])
    d = _ray_dirs(sc, cam, px, py)
    with np.errstate(divide="ignore"):
        inv = [1.0 / np.where(di == 0.0, 1e-300, di) for di in d]
    o = cam.pos
    ox, oy, oz = o.tolist()
    ol = (ox, oy, oz)
    depth = np.full(n, np.inf)
    ground = d[1] < 0
    depth[ground] = -oy * inv[1][ground]
    prim = np.where(ground, _GROUND_ID, _SKY_ID).astype(np.int32) if with_prim else None

    lo, hi = sc.bounds(k)
    umin, umax, vmin, vmax, seen = _screen_ranges(sc, cam, lo, hi)
    cand = np.nonzero(seen & (sc.kind > 0))[0]
    rnd = np.ceil if grid else np.floor          # first cell whose points can lie inside
    c0 = np.maximum(rnd(umin[cand] - 1e-6), 0).astype(np.int64)
    c1 = np.minimum(np.floor(umax[cand] + 1e-6), W - 1).astype(np.int64)
    r0 = np.maximum(rnd(vmin[cand] - 1e-6), 0).astype(np.int64)
    r1 = np.minimum(np.floor(vmax[cand] + 1e-6), H - 1).astype(np.int64)
    keep = (c1 >= c0) & (r1 >= r0)
    cand, c0, c1, r0, r1 = cand[keep], c0[keep], c1[keep], r0[keep], r1[keep]
    big = (c1 - c0 + 1) * (r1 - r0 + 1) > _BIG

    # ---- large primitives: one at a time on views ----
    if grid:   # (W, H) views of the column-major point arrays
        dv, iv = [x.reshape(W, H) for x in d], [x.reshape(W, H) for x in inv]
        depv = depth.reshape(W, H)
        primv = prim.reshape(W, H) if with_prim else None
    else:
        dv, iv, depv, primv = d, inv, depth, prim
    lo_l, hi_l = lo.tolist(), hi.tolist()
    for p, a0, a1, b0, b1 in zip(cand[big].tolist(), c0[big].tolist(), c1[big].tolist(),
                                 r0[big].tolist(), r1[big].tolist()):
        if grid:
            reg = (slice(a0, a1 + 1), slice(b0, b1 + 1))
        else:
            reg = slice(int(start[a0 * H]), int(start[(a1 + 1) * H]))
            if reg.start >= reg.stop:
                continue
        lp, hp = lo_l[p], hi_l[p]
        dep = depv[reg]
        if sc.kind[p] == _BOX:
            entry = exit_ = None
            for ax in range(3):
                oa = ol[ax]
                ia = iv[ax][reg]
                if oa < lp[ax]:
                    tn, tf = (lp[ax] - oa) * ia, (hp[ax] - oa) * ia
                elif oa > hp[ax]:
                    tn, tf = (hp[ax] - oa) * ia, (lp[ax] - oa) * ia
                else:  # camera inside this slab: only the exit matters
                    tn, tf = None, np.maximum((lp[ax] - oa) * ia, (hp[ax] - oa) * ia)
                if tn is not None:
                    entry = tn if entry is None else np.maximum(entry, tn)
                exit_ = tf if exit_ is None else np.minimum(exit_, tf)
            if entry is None:       # camera inside the box: it cannot be seen
                continue
            # entry > 0 holds for every hit: the camera is outside at least one slab.
            hit = (entry <= exit_) & (entry < dep)
            if sc.cutout[p]:
                hit &= _cutout_keep(sc, p, lp, hp, oy + entry * dv[1][reg], oz + entry * dv[2][reg])
            t = entry
        else:
            t, hit = _hit_ellipsoid(ol, lp, hp, dv[0][reg], dv[1][reg], dv[2][reg])
            if t is None:
                continue
            hit &= t < dep
        np.copyto(dep, t, where=hit)
        if with_prim:
            primv[reg][hit] = p

    # ---- small primitives: flat (primitive, point) pairs ----
    sm = ~big
    if sm.any():
        P_, C0, C1, R0, R1 = cand[sm], c0[sm], c1[sm], r0[sm], r1[sm]
        ncol = C1 - C0 + 1
        j = np.repeat(np.arange(len(P_)), ncol)                     # (prim, column) rows
        colj = C0[j] + np.arange(len(j)) - np.repeat(np.cumsum(ncol) - ncol, ncol)
        s0 = start[colj * H + R0[j]]
        s1 = start[colj * H + R1[j] + 1]
        lens = s1 - s0
        pt = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens - s0, lens)   # point index
        pp = np.repeat(P_[j], lens)                                  # primitive index
        if len(pt):
            t, hit = _pairs_hit(sc, ol, lo, hi, pp, pt, d, inv)
            t = np.where(hit, t, np.inf)
            np.minimum.at(depth, pt, t)
            if with_prim:
                win = hit & (t == depth[pt])
                prim[pt[win]] = pp[win]

    if order is not None:   # back to the caller's order
        out = np.empty_like(depth)
        out[order] = depth
        depth = out
        if with_prim:
            pr = np.empty_like(prim)
            pr[order] = prim
            prim = pr
        dd = []
        for x in d:
            y = np.empty_like(x)
            y[order] = x
            dd.append(y)
        d = tuple(dd)
    return depth, prim, d


def _hit_ellipsoid(o, lp, hp, dx, dy, dz):
    """Nearest ray parameter and hit mask for an axis-aligned ellipsoid given by its AABB."""
    cx, cy, cz = (lp[0] + hp[0]) / 2, (lp[1] + hp[1]) / 2, (lp[2] + hp[2]) / 2
    rx, ry, rz = (hp[0] - lp[0]) / 2, (hp[1] - lp[1]) / 2, (hp[2] - lp[2]) / 2
    qx, qy, qz = (o[0] - cx) / rx, (o[1] - cy) / ry, (o[2] - cz) / rz
    cc = qx * qx + qy * qy + qz * qz - 1.0
    if cc <= 0:                # camera inside
        return None, None
    ex, ey, ez = dx * (1 / rx), dy * (1 / ry), dz * (1 / rz)
    A = ex * ex + ey * ey + ez * ez
    B = qx * ex + qy * ey + qz * ez
    disc = B * B - A * cc
    hit = (disc >= 0) & (B < 0)
    t = (-B - np.sqrt(np.maximum(disc, 0.0))) / A
    return t, hit


def _pairs_hit(sc: _Scene, o, lo, hi, pp, pt, d, inv):
    """Hit parameter and mask for flat (primitive pp, point pt) pairs."""
    o = np.asarray(o)
    t = np.empty(len(pp))
    hit = np.zeros(len(pp), bool)
    is_box = sc.kind[pp] == _BOX
    b = np.nonzero(is_box)[0]
    if len(b):
        pb, qb = pp[b], pt[b]
        A, B = lo - o, hi - o                      # (N, 3) slab offsets from the camera
        entry = exit_ = None
        for ax in range(3):
            ia = inv[ax][qb]
            t1, t2 = A[pb, ax] * ia, B[pb, ax] * ia
            tn, tf = np.minimum(t1, t2), np.maximum(t1, t2)
            entry = tn if entry is None else np.maximum(entry, tn)
            exit_ = tf if exit_ is None else np.minimum(exit_, tf)
        hb = (entry <= exit_) & (entry > 0)
        cut = np.nonzero(sc.cutout[pb] & hb)[0]
        for p in np.unique(pb[cut]).tolist():
            c = cut[pb[cut] == p]
            q, e = qb[c], entry[c]
            hb[c] = _cutout_keep(sc, p, lo[p], hi[p], o[1] + e * d[1][q], o[2] + e * d[2][q])
        t[b], hit[b] = entry, hb
    e = np.nonzero(~is_box)[0]
    if len(e):
        pe, qe = pp[e], pt[e]
        c, r = (lo[pe] + hi[pe]) / 2, (hi[pe] - lo[pe]) / 2
        q = (o - c) / r                              # camera in unit-sphere coords, per pair
        # Same operation order as _hit_ellipsoid, so both paths give identical numbers.
        ex, ey, ez = d[0][qe] * (1 / r[:, 0]), d[1][qe] * (1 / r[:, 1]), d[2][qe] * (1 / r[:, 2])
        Aq = ex * ex + ey * ey + ez * ez
        Bq = q[:, 0] * ex + q[:, 1] * ey + q[:, 2] * ez
        cc = q[:, 0] * q[:, 0] + q[:, 1] * q[:, 1] + q[:, 2] * q[:, 2] - 1.0
        disc = Bq * Bq - Aq * cc
        te = (-Bq - np.sqrt(np.maximum(disc, 0.0))) / Aq
        t[e], hit[e] = te, (disc >= 0) & (Bq < 0) & (cc > 0)
    return t, hit


def _cutout_keep(sc: _Scene, p, lp, hp, y, z):
    """Which hits (y, z) on a cut-out plane (x = const) are solid."""
    if sc.cutout[p] == _CUT_BIKE:
        tire, frame = _bike_parts(sc.par[p, 0], hp[2] - lp[2], z - lp[2], y - lp[1])
        return tire | frame
    # fence: vertical slats plus top and bottom rails
    period, duty, rail = sc.par[p, 0], sc.par[p, 1], sc.par[p, 2]
    u = (z - lp[2]) * (1.0 / period)
    v = y - lp[1]
    return ((u - np.floor(u)) < duty) | (v < rail) | (v > (hp[1] - lp[1]) - rail)


# A bicycle in its plane: (position along the bike from the rear, height) in metres.
_BIKE_WHEELS = ((0.38, 0.35), (1.37, 0.35))
_BIKE_TUBES = np.array([   # (a0, y0, a1, y1): stays, seat / top / down tube, fork, stem, saddle, bar
    (0.38, 0.35, 0.80, 0.33), (0.38, 0.35, 0.70, 0.88), (0.80, 0.33, 0.70, 0.88),
    (0.70, 0.88, 1.25, 0.90), (0.80, 0.33, 1.25, 0.90), (1.25, 0.90, 1.37, 0.35),
    (1.25, 0.90, 1.20, 1.02), (0.60, 0.91, 0.80, 0.91), (1.12, 1.02, 1.28, 1.02)])


def _bike_parts(direction, length, a, y):
    """Tire and frame masks at plane coords (a along z from the box start, y up)."""
    direction = np.asarray(direction)
    a = np.where(direction > 0, a, length - a)        # the front points along the motion
    tire = np.zeros(np.shape(a), bool)
    for wa, wy in _BIKE_WHEELS:
        r2 = (a - wa) ** 2 + (y - wy) ** 2
        tire |= (r2 < 0.35 ** 2) & (r2 > 0.29 ** 2)
    frame = np.zeros(np.shape(a), bool)
    for a0, y0, a1, y1 in _BIKE_TUBES:
        ea, ey = a1 - a0, y1 - y0
        t = np.clip(((a - a0) * ea + (y - y0) * ey) / (ea * ea + ey * ey), 0.0, 1.0)
        frame |= (a - a0 - t * ea) ** 2 + (y - y0 - t * ey) ** 2 < 0.035 ** 2
    return tire, frame


# ============================================================================ shading

def _smooth(a, b, x):
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _tex(sc: _Scene, i: int, u, v):
    """Bilinear lookup in periodic noise tile i at texel coords (u, v); continuous in (u, v)."""
    tile = sc.tiles[i]
    fu, fv = np.floor(u), np.floor(v)
    au, av = u - fu, v - fv
    iu = fu.astype(np.int64) & (_TILE - 1)
    iv = fv.astype(np.int64) & (_TILE - 1)
    iu1, iv1 = (iu + 1) & (_TILE - 1), (iv + 1) & (_TILE - 1)
    r0, r1 = iv * _TILE, iv1 * _TILE
    top = tile[r0 + iu] * (1 - au) + tile[r0 + iu1] * au
    bot = tile[r1 + iu] * (1 - au) + tile[r1 + iu1] * au
    return top * (1 - av) + bot * av


def _hash01(*ints):
    """Deterministic pseudo-random value in [0, 1) per integer tuple (e.g. a window index)."""
    h = np.uint64(0x9E3779B97F4A7C15)
    acc = np.zeros(np.shape(ints[0]), np.uint64)
    with np.errstate(over="ignore"):
        for i, x in enumerate(ints):
            salt = np.uint64((0x632BE59BD9B4E019 * (i + 1)) & 0xFFFFFFFFFFFFFFFF)
            acc = (acc ^ (np.asarray(x).astype(np.int64).astype(np.uint64) + salt)) * h
            acc ^= acc >> np.uint64(29)
    return (acc >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _box_faces(P, lo, hi):
    """Face axis (0 x, 1 y, 2 z), sign (+-1) and local coords L = P - lo for points on AABBs."""
    half = (hi - lo) / 2
    flat = half < 1e-9                 # zero-thickness primitive (fence plane)
    q = (P - (lo + hi) / 2) / np.where(flat, 1.0, half)
    # A plane's face axis is its flat axis; its normal faces the street centre (x = 0).
    q = np.where(flat, -2.0 * np.where(lo + hi > 0, 1.0, -1.0), q)
    ax = np.abs(q).argmax(1)
    r = np.arange(len(P))
    sgn = np.where(q[r, ax] >= 0, 1.0, -1.0)
    return ax, sgn, P - lo, hi - lo


def _face_uv(ax, L):
    """Surface coords (u horizontal along the face, v up for vertical faces) in metres."""
    u = np.where(ax == 0, L[:, 2], L[:, 0])
    v = np.where(ax == 2, L[:, 1], np.where(ax == 0, L[:, 1], L[:, 2]))
    return u, v


def _shade(sc: _Scene, k: int, d, depth, prim):
    """Linear RGB in [0, ~1] (before exposure), labels, instances and world points of hits."""
    n = len(depth)
    rgb = np.zeros((n, 3))
    labels = sc.cls[prim].copy()
    inst = sc.inst[prim].copy()
    o = sc.cams[k].pos
    P = np.empty((n, 3))
    fin = np.where(np.isfinite(depth), depth, 0.0)
    for i in range(3):
        P[:, i] = o[i] + fin * d[i]
    P[~np.isfinite(depth)] = np.nan     # sky: a direction, not a point (see _project)
    lo_k, hi_k = sc.bounds(k)

    sky = prim == _SKY_ID
    if sky.any():
        rgb[sky] = _shade_sky(sc, d[0][sky], d[1][sky], d[2][sky])
    gnd = np.nonzero(prim == _GROUND_ID)[0]
    if len(gnd):
        col, lab = _shade_ground(sc, P[gnd, 0], P[gnd, 2])
        rgb[gnd] = col
        labels[gnd] = lab

    obj = np.nonzero(prim >= 2)[0]
    if len(obj):
        pr = prim[obj]
        Po = P[obj]
        lo, hi = lo_k[pr], hi_k[pr]
        normal = np.zeros((len(obj), 3))
        albedo = np.zeros((len(obj), 3))
        is_box = sc.kind[pr] == _BOX
        b = np.nonzero(is_box)[0]
        ax, sgn, L, S = _box_faces(Po[b], lo[b], hi[b])
        normal[b, ax] = sgn
        e = np.nonzero(~is_box)[0]
        if len(e):
            cen, rad = (lo[e] + hi[e]) / 2, (hi[e] - lo[e]) / 2
            nrm = (Po[e] - cen) / rad ** 2
            normal[e] = nrm / np.linalg.norm(nrm, axis=1, keepdims=True)
        mat = sc.mat[pr]
        for m in np.unique(mat).tolist():
            sel = mat == m
            if m == M_FOLIAGE:   # ellipsoid crowns and box hedges: 3-D position -> noise
                idx = np.nonzero(sel)[0]
                albedo[idx] = _shade_foliage(sc, pr[idx], Po[idx] - lo[idx], normal[idx])
                continue
            bi = np.nonzero(sel[b])[0]     # positions within the box arrays
            idx = b[bi]
            albedo[idx] = _SHADERS[m](sc, pr[idx], ax[bi], sgn[bi], L[bi], S[bi])
        lam = np.clip(normal @ sc.sun, 0.0, None)
        light = sc.ambient * sc.amb_col + (1 - sc.ambient) * lam[:, None] * sc.sun_col
        rgb[obj] = albedo * light
    return rgb, labels, inst, P


def _shade_sky(sc: _Scene, dx, dy, dz):
    nrm = np.sqrt(dx * dx + dy * dy + dz * dz)
    elev = np.clip(dy / nrm, 0.0, 1.0)
    t = np.sqrt(elev)[:, None]
    col = sc.sky_horizon * (1 - t) + sc.sky_zenith * t
    if sc.cloud_amount > 0:
        # Clouds on a plane at infinity: coordinates depend on the direction only.
        inv = 1.0 / np.maximum(dy, 1e-3)
        c = _tex(sc, 1, dx * inv * 25.0 + 17.0, dz * inv * 25.0 + 91.0)
        cov = _smooth(1.0 - sc.cloud_amount * 0.6, 1.0 - sc.cloud_amount * 0.6 + 0.45, c)
        cov = cov * _smooth(0.05, 0.3, elev)
        col = col * (1 - cov[:, None] * 0.85) + (0.92 * cov)[:, None]
    return col


def _shade_ground(sc: _Scene, x, z):
    g = sc.ground
    ax = np.abs(x)
    side = (x >= 0).astype(np.int64)
    rh = g["road_half"]
    lab = np.full(len(x), ROAD, np.int64)
    verge = g["verge"][side]
    edge = g["edge"][side]
    is_verge = (ax >= rh) & (ax < rh + verge)
    is_walk = (ax >= rh + verge) & (ax < edge)
    plot = ax >= edge
    lab[is_verge] = TERRAIN
    lab[is_walk] = SIDEWALK
    if plot.any():
        pi = np.nonzero(plot)[0]
        for s in (0, 1):
            q = pi[side[pi] == s]
            j = np.searchsorted(g["plot_bounds"][s], z[q], "right") - 1
            lab[q] = g["plot_type"][s][np.maximum(j, 0)]
    col = np.zeros((len(x), 3))
    # Texture frequencies are kept low on purpose: with one ray per pixel, detail much finer
    # than a pixel's footprint turns into per-pixel noise that no warp can reproduce.
    fine = _tex(sc, 0, x * 5.0, z * 2.5)               # 20 x 40 cm texels
    coarse = _tex(sc, 1, x * 0.8 + 50.0, z * 0.5)
    road = lab == ROAD
    if road.any():
        xr, zr = x[road], z[road]
        base = g["road_col"] * (1 + 0.2 * (fine[road] - 0.5) + 0.35 * (coarse[road] - 0.5))[:, None]
        mark = _lane_marks(sc, xr, zr)
        wear = 0.75 + 0.25 * fine[road]
        paint = np.where(mark[:, None] == 2, np.array([0.9, 0.75, 0.15]), np.array([0.9, 0.9, 0.88]))
        a = (mark > 0) * wear
        col[road] = base * (1 - a[:, None]) + paint * a[:, None]
    walk = lab == SIDEWALK
    if walk.any():
        xw, zw = x[walk], z[walk]
        p = g["paver"]
        gu, gv = xw / p, zw / p
        grout = np.minimum(np.abs(gu - np.round(gu)), np.abs(gv - np.round(gv))) * p
        shade = 1 + 0.15 * (fine[walk] - 0.5) + 0.25 * (coarse[walk] - 0.5)
        shade = shade * (1 - 0.2 * (grout < 0.03))
        sw = side[walk]
        curb = (np.abs(xw) - (rh + g["verge"][sw])) < 0.25
        shade = np.where(curb, shade * 1.2, shade)
        cw = g["walk_col"] * shade[:, None]
        out = g["edge"][sw] - np.abs(xw)                  # distance to the plots
        lane = g["bike"][sw] & (out > 0) & (out < g["bike_w"])
        if lane.any():   # bike lane: reddish asphalt, a white line on its inner side
            bl = g["bike_col"] * (1 + 0.2 * (fine[walk][lane] - 0.5))[:, None]
            line = out[lane] > g["bike_w"] - 0.1
            bl[line] = (0.85, 0.85, 0.83)
            cw[lane] = bl
        col[walk] = cw
    ter = lab == TERRAIN
    if ter.any():
        mix = _smooth(0.35, 0.65, coarse[ter])[:, None]
        grass = g["grass_col"] * (0.8 + 0.4 * fine[ter])[:, None]
        col[ter] = grass * mix + g["dirt_col"] * (0.85 + 0.3 * fine[ter])[:, None] * (1 - mix)
    light = sc.ambient * sc.amb_col + (1 - sc.ambient) * sc.sun[1] * sc.sun_col
    if sc.shadow is not None:
        sh = sc.shadow
        gx = np.clip((x - sh["x0"]) / sh["res"], 0, sh["nx"] - 1.001)
        gz = np.clip((z - sh["z0"]) / sh["res"], 0, sh["nz"] - 1.001)
        ix, iz = gx.astype(np.int64), gz.astype(np.int64)
        fx, fz = gx - ix, gz - iz
        mp, nx = sh["map"], sh["nx"]
        r0, r1 = iz * nx, (iz + 1) * nx
        s = ((mp[r0 + ix] * (1 - fx) + mp[r0 + ix + 1] * fx) * (1 - fz)
             + (mp[r1 + ix] * (1 - fx) + mp[r1 + ix + 1] * fx) * fz)
        light = sc.ambient * sc.amb_col + (1 - sc.ambient) * sc.sun[1] * (1 - s)[:, None] * sc.sun_col
    return col * light, lab


def _lane_marks(sc: _Scene, x, z):
    """0 none, 1 white, 2 yellow paint at road points (x, z)."""
    g = sc.ground
    lw, lanes = g["lane_w"], g["lanes"]
    per, duty = g["dash"]
    ph = z / per
    dashed = (ph - np.floor(ph)) < duty
    ax = np.abs(x)
    out = np.zeros(len(x), np.int64)
    st = g["centre_style"]
    if st == 0:
        out[np.abs(ax - 0.13) < 0.06] = 2
    elif st == 1:
        out[(ax < 0.07) & dashed] = 1
    else:
        out[ax < 0.07] = 1
    for j in range(1, lanes):
        out[(np.abs(ax - j * lw) < 0.07) & dashed] = 1
    out[np.abs(ax - lanes * lw) < 0.08] = 1                 # edge lines
    if g["park_w"] > 0:                                      # parking bay separators
        bay = z / 6.0
        out[(ax > lanes * lw) & (np.abs(bay - np.round(bay)) * 6.0 < 0.07)] = 1
    if g["crossing"] is not None:
        zc, wc = g["crossing"]
        zebra = (z > zc) & (z < zc + wc) & (ax < g["road_half"] - 0.3)
        stripe = x / 1.0
        out[zebra & ((stripe - np.floor(stripe)) < 0.5)] = 1
    return out


def _shade_plain(sc, pr, ax, sgn, L, S):
    amp, scale = sc.par[pr, 0], sc.par[pr, 1]
    u, v = _face_uv(ax, L)
    n = _tex(sc, 0, u / np.maximum(scale, 1e-3), v / np.maximum(scale, 1e-3) + 31.0 * ax)
    return sc.c0[pr] * (1 + amp * 2 * (n - 0.5))[:, None]


def _shade_building(sc, pr, ax, sgn, L, S):
    """Facade: plaster / brick / concrete panels, a grid of framed windows (some lit), shop
    windows or doors on the ground floor, a cornice; flat dark roofs."""
    floor_h, spacing, ww, wh, off, tscale, style, shop = sc.par[pr].T
    u, v = _face_uv(ax, L)
    n = _tex(sc, 0, u / tscale, v / tscale + 97.0 * sgn)
    n2 = _tex(sc, 1, u * 0.7 + 13.0 * pr, v * 0.7)
    shade = 1 + 0.15 * (n - 0.5) + 0.3 * (n2 - 0.5)
    i = np.nonzero(style == 1)[0]
    if len(i):   # brick: mortar rows of 0.3 m, bricks of 0.6 m, offset every other row
        row = v[i] / 0.3
        ri = np.floor(row)
        bc = u[i] / 0.6 + 0.5 * (ri % 2)
        shade[i[(row - ri < 0.12) | (bc - np.floor(bc) < 0.06)]] *= 0.92
    i = np.nonzero(style == 2)[0]
    if len(i):   # concrete panels: seams every 1.5 m and at every floor
        pu, pv = u[i] / 1.5, v[i] / floor_h[i]
        seam = (np.abs(pu - np.round(pu)) * 1.5 < 0.04) | (np.abs(pv - np.round(pv)) * floor_h[i] < 0.05)
        shade[i[seam]] *= 0.75
    col = sc.c0[pr] * shade[:, None]
    vert = ax != 1
    fl = np.floor(v / floor_h)
    fv = v / floor_h - fl
    cu = (u - off) / spacing
    ci = np.floor(cu)
    du, dv = np.abs(cu - ci - 0.5), np.abs(fv - 0.55)
    upper = vert & (fl >= 1) & (v < S[:, 1] - 0.6)
    inside = (du < ww / 2) & (dv < wh / 2)
    frame = upper & ~inside & (du < ww / 2 + 0.06 / spacing) & (dv < wh / 2 + 0.06 / floor_h)
    gf = vert & (fl == 0)
    shopw = gf & (shop > 0.5) & (du < 0.42) & (fv > 0.12) & (fv < 0.8)
    i = np.nonzero(frame)[0]
    col[i] = sc.c2[pr[i]]
    i = np.nonzero((upper & inside) | shopw)[0]
    if len(i):   # glass: per-window brightness from a hash of the window's index; a few lit
        lit = _hash01(pr[i], fl[i], ci[i], ax[i])
        glass = sc.c1[pr[i]] * (0.6 + 0.8 * lit)[:, None] + 0.1 * (n2[i] - 0.5)[:, None]
        glass[lit > 0.93] = (0.95, 0.85, 0.55)
        glass[shopw[i]] *= 1.2
        col[i] = glass
    i = np.nonzero(gf & (shop <= 0.5) & (du < 0.15) & (fv < 0.75))[0]
    i = i[_hash01(pr[i], ci[i]) < 0.35]
    col[i] = sc.c2[pr[i]] * 0.45                      # doors
    i = np.nonzero(vert & (np.abs(v - floor_h) < 0.12))[0]
    col[i] = sc.c2[pr[i]] * 0.9                       # cornice above the ground floor
    i = np.nonzero(~vert)[0]
    col[i] = np.array([0.3, 0.3, 0.32]) * shade[i, None]   # roof
    return col


def _shade_carbody(sc, pr, ax, sgn, L, S):
    direction, wr = sc.par[pr, 0], sc.par[pr, 1]
    paint = sc.c0[pr]
    col = paint * (0.95 + 0.1 * _tex(sc, 1, L[:, 0] * 4 + 3.0 * pr, L[:, 2] * 4 + L[:, 1] * 4))[:, None]
    # side faces (x): wheels as dark discs, a dark sill line
    side = ax == 0
    zf = L[:, 2]
    wz = np.minimum(np.abs(zf - 0.75), np.abs(zf - (S[:, 2] - 0.75)))
    wheel = side & (wz ** 2 + (L[:, 1] - wr) ** 2 < wr ** 2)
    rim = side & (wz ** 2 + (L[:, 1] - wr) ** 2 < (wr * 0.5) ** 2)
    col = np.where(wheel[:, None], np.array([0.05, 0.05, 0.05]), col)
    col = np.where(rim[:, None], np.array([0.6, 0.6, 0.62]), col)
    sill = side & ~wheel & (L[:, 1] < 0.25)
    col = np.where(sill[:, None], paint * 0.4, col)
    # ends (z): lights and plate; front faces +z for direction +1
    end = ax == 2
    front = end & (sgn == direction)
    x = L[:, 0]
    edge = np.minimum(x, S[:, 0] - x)
    lamp = end & (edge > 0.08) & (edge < 0.4) & (L[:, 1] > S[:, 1] - 0.3) & (L[:, 1] < S[:, 1] - 0.1)
    col = np.where((lamp & front)[:, None], np.array([0.98, 0.95, 0.8]), col)
    col = np.where((lamp & ~front)[:, None], np.array([0.8, 0.05, 0.05]), col)
    plate = end & (np.abs(x - S[:, 0] / 2) < 0.26) & (np.abs(L[:, 1] - 0.45) < 0.07)
    col = np.where(plate[:, None], np.array([0.92, 0.92, 0.9]), col)
    bumper = end & (L[:, 1] < 0.3)
    col = np.where((bumper & ~plate)[:, None], paint * 0.35, col)
    return col


def _shade_cabin(sc, pr, ax, sgn, L, S):
    paint, glass = sc.c0[pr], sc.c1[pr]
    col = paint.copy()
    vert = ax != 1
    u, v = _face_uv(ax, L)
    w = np.where(ax == 0, S[:, 2], S[:, 0])
    pane = vert & (v > 0.06) & (v < S[:, 1] - 0.07) & (u > 0.1) & (u < w - 0.1)
    pillar = (ax == 0) & (np.abs(u - w / 2) < 0.05)
    refl = 0.7 + 0.6 * _tex(sc, 1, u * 3 + 7.0 * pr, v * 3)
    col = np.where((pane & ~pillar)[:, None], glass * refl[:, None], col)
    return col


def _shade_bus(sc, pr, ax, sgn, L, S):
    """Bus or truck cab: paint with a band of windows and a dark windscreen at the front."""
    direction, is_cab = sc.par[pr, 0], sc.par[pr, 1]
    paint, glass = sc.c0[pr], sc.c1[pr]
    u, v = _face_uv(ax, L)
    col = paint * (0.95 + 0.1 * _tex(sc, 1, u * 2 + 5.0 * pr, v * 2))[:, None]
    side = ax == 0
    band = side & (v > 1.3) & (v < S[:, 1] - 0.35) & (is_cab < 0.5)
    cu = u / 1.2
    win = band & (cu - np.floor(cu) > 0.08)
    col = np.where(win[:, None], glass * (0.8 + 0.4 * _hash01(pr, np.floor(cu)))[:, None], col)
    front = (ax == 2) & (sgn == direction)
    screen = front & (v > S[:, 1] * 0.45) & (v < S[:, 1] - 0.15) & (u > 0.12) & (u < S[:, 0] - 0.12)
    col = np.where(screen[:, None], glass, col)
    cab_side = side & (is_cab > 0.5) & (v > S[:, 1] * 0.5) & (v < S[:, 1] - 0.2) & (u > 0.2) & (u < S[:, 2] - 0.3)
    col = np.where(cab_side[:, None], glass, col)
    wheel = side & (np.minimum(np.abs(u - 1.0), np.abs(u - (S[:, 2] - 1.0))) ** 2 + (v - 0.48) ** 2 < 0.23)
    col = np.where(wheel[:, None], np.array([0.05, 0.05, 0.05]), col)
    return col


def _shade_skin(sc, pr, ax, sgn, L, S):
    hair = (L[:, 1] > S[:, 1] * 0.72) | ((ax == 2) & (sgn < 0) & (L[:, 1] > S[:, 1] * 0.3))
    return np.where(hair[:, None], sc.c1[pr], sc.c0[pr])


def _shade_cloth(sc, pr, ax, sgn, L, S):
    u, v = _face_uv(ax, L)
    n = _tex(sc, 0, u * 6 + 11.0 * pr, v * 6)
    return sc.c0[pr] * (0.85 + 0.3 * n)[:, None]


def _shade_sign(sc, pr, ax, sgn, L, S):
    face = (ax == 2) & (sgn < 0)       # the plate faces the approaching camera (-z)
    u, v = _face_uv(ax, L)
    cu, cv = u - S[:, 0] / 2, v - S[:, 1] / 2
    r = np.sqrt(cu * cu + cv * cv) / (S[:, 0] / 2)
    kind = sc.par[pr, 0]
    inner = np.where(kind == 1, np.abs(cu) < S[:, 0] * 0.15, r < 0.62)   # blue: arrow bar; else disc
    col = np.where((face & (r < 0.92))[:, None], sc.c0[pr], np.array([0.55, 0.55, 0.57]))
    col = np.where((face & inner & (kind != 2))[:, None], sc.c1[pr], col)
    return col


def _shade_tlight(sc, pr, ax, sgn, L, S):
    face = (ax == 2) & (sgn < 0)
    u, v = _face_uv(ax, L)
    col = np.broadcast_to(sc.c0[pr], (len(pr), 3)).copy()
    on = sc.par[pr, 0]
    colours = np.array([[1.0, 0.15, 0.1], [1.0, 0.7, 0.1], [0.2, 1.0, 0.4]])
    for i, yc in enumerate((0.72, 0.45, 0.18)):
        lamp = face & ((u - S[:, 0] / 2) ** 2 + (v - yc * S[:, 1]) ** 2 < 0.11 ** 2)
        c = np.where((on == i)[:, None], colours[i], colours[i] * 0.2)
        col = np.where(lamp[:, None], c, col)
    return col


def _shade_foliage(sc, pr, L, normal):
    """Leafy noise from the 3-D local position, sampled on the dominant normal's plane."""
    scale = 1.0 / np.maximum(sc.par[pr, 0], 1e-3)
    ax = np.abs(normal).argmax(1)
    u = np.where(ax == 0, L[:, 2], L[:, 0]) * scale
    v = np.where(ax == 1, L[:, 2], L[:, 1]) * scale
    n = _tex(sc, 2, u + 40.0 * ax, v + 7.0 * pr)
    m = _smooth(0.3, 0.7, n)[:, None]
    return sc.c0[pr] * (1 - m) + sc.c1[pr] * m


def _shade_bike(sc, pr, ax, sgn, L, S):
    tire, _ = _bike_parts(sc.par[pr, 0], S[:, 2], L[:, 2], L[:, 1])
    return np.where(tire[:, None], np.array([0.06, 0.06, 0.06]), sc.c0[pr])


def _shade_fence(sc, pr, ax, sgn, L, S):
    u, v = _face_uv(ax, L)
    return sc.c0[pr] * (0.85 + 0.3 * _tex(sc, 0, u * 4, v * 4))[:, None]


_SHADERS = {M_PLAIN: _shade_plain, M_BUILDING: _shade_building, M_CARBODY: _shade_carbody,
            M_CABIN: _shade_cabin, M_BUS: _shade_bus, M_SKIN: _shade_skin, M_CLOTH: _shade_cloth,
            M_SIGN: _shade_sign, M_TLIGHT: _shade_tlight, M_FENCE: _shade_fence, M_BIKE: _shade_bike}


# ============================================================================ frames and flow

def _render_points(sc: _Scene, k: int, px, py, grid: bool = False) -> dict:
    """Cast and shade image points of frame k (see _cast for ``grid``); colours in [0, 1]."""
    depth, prim, d = _cast(sc, k, px, py, grid=grid)
    rgb, labels, inst, P = _shade(sc, k, d, depth, prim)
    sky = prim == _SKY_ID
    # Lit surfaces get the sequence's exposure; the sky is a light source and ignores it. The
    # optional in-sequence drift (sc.gain) applies to everything.
    rgb[~sky] *= sc.exposure
    rgb *= sc.gain[k]
    return dict(rgb=np.clip(rgb, 0.0, 1.0), labels=labels, inst=inst, depth=depth, prim=prim, P=P, d=d)


def _grid(sc: _Scene):
    """Pixel centres in column-major order (what ``_cast(..., grid=True)`` expects)."""
    px = np.repeat(np.arange(sc.W, dtype=np.float64), sc.H)
    py = np.tile(np.arange(sc.H, dtype=np.float64), sc.W)
    return px, py


def _to_image(a, sc: _Scene):
    """Column-major per-point values (W*H, ...) -> (H, W, ...)."""
    return np.swapaxes(a.reshape(sc.W, sc.H, *a.shape[1:]), 0, 1)


def _project(sc: _Scene, k: int, P, d, prim):
    """Image coords and camera depth of world points (sky: directions) in frame k."""
    cam = sc.cams[k]
    sky = prim == _SKY_ID
    rel = P - cam.pos
    rel[sky] = np.stack([d[0][sky], d[1][sky], d[2][sky]], 1)   # points at infinity: directions
    pc = rel @ cam.R.T
    z = pc[:, 2]
    zc = np.maximum(z, _NEAR)
    x = sc.f * pc[:, 0] / zc + sc.cx
    y = sc.f * pc[:, 1] / zc + sc.cy
    zcmp = np.where(sky, np.inf, z)
    return x, y, z, zcmp


def _flow(sc: _Scene, fr: dict, px, py, k_src: int, k_dst: int):
    """Flow from frame k_src to k_dst (|k_dst - k_src| = 1) and the occlusion mask, per point."""
    prim = fr["prim"]
    P2 = fr["P"] + (k_dst - k_src) * sc.dpos[prim]
    x2, y2, z, zcmp = _project(sc, k_dst, P2, fr["d"], prim)
    flow = np.stack([x2 - px, y2 - py], 1)
    e = 1e-9   # a point that does not move must not "leave" the frame by rounding
    inside = (z > _NEAR) & (x2 >= -e) & (x2 <= sc.W - 1 + e) & (y2 >= -e) & (y2 <= sc.H - 1 + e)
    occ = ~inside
    idx = np.nonzero(inside)[0]
    depth, _, _ = _cast(sc, k_dst, x2[idx], y2[idx], with_prim=False)
    # Visible iff nothing is nearer than the moved point along the exact ray through its image.
    occ[idx] = depth < zcmp[idx] * (1 - _DEPTH_RTOL)
    return flow, occ, (idx, x2[idx], y2[idx])


def render_sequence(config: SynthStreetConfig, seed: int) -> SynthSequence:
    """Render one sequence. Same ``(config, seed)`` -> bit-identical arrays (same machine).

    Everything is held in memory: about 37 bytes per pixel and frame (0.4 GB for 300 frames at
    128x256), mostly the two float32 flow fields and the int64 labels.
    """
    if not isinstance(config, SynthStreetConfig):
        raise ConfigError(f"config must be a SynthStreetConfig, got {type(config).__name__}",
                          "build one with SynthStreetConfig(...)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}", "pass e.g. seed=0")
    sc = _build_scene(config, int(seed))
    T, H, W = sc.T, sc.H, sc.W
    px, py = _grid(sc)
    rgb = np.empty((T, H, W, 3), np.uint8)
    labels = np.empty((T, H, W), np.int64)
    inst = np.empty((T, H, W), np.int32)
    depth = np.empty((T, H, W), np.float32)
    fwd = np.empty((T - 1, 2, H, W), np.float32)
    bwd = np.empty((T - 1, 2, H, W), np.float32)
    occ_f = np.empty((T - 1, H, W), bool)
    occ_b = np.empty((T - 1, H, W), bool)
    prev = None
    for k in range(T):
        fr = _render_points(sc, k, px, py, grid=True)
        rgb[k] = _to_image(np.round(fr["rgb"] * 255.0).astype(np.uint8), sc)
        labels[k] = _to_image(fr["labels"], sc)
        inst[k] = _to_image(fr["inst"], sc)
        depth[k] = _to_image(fr["depth"], sc)
        if prev is not None:
            f, o, _ = _flow(sc, prev, px, py, k - 1, k)
            fwd[k - 1] = np.moveaxis(_to_image(f, sc), -1, 0)
            occ_f[k - 1] = _to_image(o, sc)
            f, o, _ = _flow(sc, fr, px, py, k, k - 1)
            bwd[k - 1] = np.moveaxis(_to_image(f, sc), -1, 0)
            occ_b[k - 1] = _to_image(o, sc)
        prev = fr
    K = np.array([[sc.f, 0, sc.cx], [0, sc.f, sc.cy], [0, 0, 1.0]])
    poses = np.zeros((T, 4, 4))
    for k, cam in enumerate(sc.cams):
        poses[k, :3, :3] = cam.R
        poses[k, :3, 3] = -cam.R @ cam.pos
        poses[k, 3, 3] = 1.0
    return SynthSequence(rgb=rgb, labels=labels, flow_forward=fwd, flow_backward=bwd,
                         occlusion_forward=occ_f, occlusion_backward=occ_b, fps=float(config.fps),
                         depth=depth, instances=inst, intrinsics=K, poses=poses,
                         exposure=sc.gain.astype(np.float32), seed=int(seed), config=config)


# ============================================================================ files

def _write_png_rgb(path: Path, rgb: np.ndarray):
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise OutputError(f"cannot write {path}", "check free disk space and permissions")


def _write_label(path: Path, lab: np.ndarray):
    try:
        from vpcli.io.labels import write_label_png
    except ImportError:  # pragma: no cover - labels IO lives in vpcli.io.labels
        from PIL import Image

        img = Image.fromarray(lab.astype(np.uint8), mode="P")
        img.save(path, format="PNG")
        return
    write_label_png(path, lab)


def _save_npz(path: Path, level: int, **arrays):
    """An ``.npz`` readable by ``np.load``; ``level`` 0 stores, 1-9 deflates at that level."""
    import zipfile

    mode = zipfile.ZIP_DEFLATED if level else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", mode, compresslevel=level or None) as zf:
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)


def write_sequence(folder: str | os.PathLike, seq: SynthSequence, *, overwrite: bool = False,
                   extra_meta: dict | None = None) -> Path:
    """Write one sequence atomically (a temp folder renamed at the end).

    Layout: ``frames/00000.png`` (RGB), ``labels/00000.png`` (palette PNG, index = train id),
    ``flow_forward.npz`` / ``flow_backward.npz`` (key ``flow``, float32 (T-1,2,H,W)),
    ``occlusion.npz`` (keys ``forward``, ``backward``), ``depth.npz`` (key ``depth``),
    ``instances.npz`` (key ``instances``), ``camera.npz`` (``intrinsics``, ``poses``) and
    ``meta.json``.
    """
    folder = Path(folder)
    check_writable_dir(folder.parent)
    check_overwrite(folder, overwrite)
    T = len(seq)
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        (tmp / "frames").mkdir()
        (tmp / "labels").mkdir()
        for k in range(T):
            _write_png_rgb(tmp / "frames" / f"{k:05d}.png", seq.rgb[k])
            _write_label(tmp / "labels" / f"{k:05d}.png", seq.labels[k])
        # Exact float flow hardly compresses (~10 %) and deflating it costs more than rendering
        # it, so it is stored plainly; masks, ids and depth deflate well even at level 1.
        _save_npz(tmp / "flow_forward.npz", 0, flow=seq.flow_forward)
        _save_npz(tmp / "flow_backward.npz", 0, flow=seq.flow_backward)
        _save_npz(tmp / "occlusion.npz", 1, forward=seq.occlusion_forward, backward=seq.occlusion_backward)
        if seq.depth is not None:
            _save_npz(tmp / "depth.npz", 1, depth=seq.depth)
        if seq.instances is not None:
            _save_npz(tmp / "instances.npz", 1, instances=seq.instances)
        if seq.poses is not None:
            _save_npz(tmp / "camera.npz", 0, intrinsics=seq.intrinsics, poses=seq.poses)
        H, W = seq.rgb.shape[1:3]
        meta = {
            "generator": "vpcli.data.synth_street",
            "generator_version": GENERATOR_VERSION,
            "seed": seq.seed,
            "config": seq.config.to_dict() if seq.config is not None else None,
            "num_frames": T, "height": int(H), "width": int(W), "fps": seq.fps,
            "classes": list(CLASS_NAMES),
            "label_format": "palette PNG, pixel index = Cityscapes train id, 255 = ignore",
            "flow": "float32 (T-1, 2, H, W), (u, v) pixels; forward[t]: t -> t+1, backward[t]: t+1 -> t",
            "occlusion": "forward[t]: pixels of t not visible in t+1; backward[t]: pixels of t+1 not visible in t",
            "depth": "float32 (T, H, W) camera-frame z in metres, inf = sky",
            "instances": "int32 (T, H, W), 0 = stuff, one id per person / rider / vehicle / bicycle",
            "camera": "intrinsics (3, 3); poses (T, 4, 4) world -> camera, camera x right, y down, z forward",
            "exposure": [float(x) for x in seq.exposure] if seq.exposure is not None else None,
            "versions": {"numpy": np.__version__},
        }
        meta.update(extra_meta or {})
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def generate(out_dir: str | os.PathLike, *, num_sequences: int, config: SynthStreetConfig | None = None,
             seed: int = 0, start_index: int = 0, overwrite: bool = False,
             progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Render and write ``seq_{i:05d}`` for i in ``[start_index, start_index + num_sequences)``.

    Sequence i uses ``sequence_seed(seed, i)``, so any subset (a shard, a re-run of one broken
    sequence) regenerates identically on its own. ``progress(done, total)`` is called after each
    sequence. Existing sequence folders are an error unless ``overwrite``.
    """
    config = SynthStreetConfig() if config is None else config
    for name, v, lo in (("num_sequences", num_sequences, 0), ("start_index", start_index, 0), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}", f"fix {name}")
    out = check_writable_dir(out_dir)
    paths = [out / f"seq_{i:05d}" for i in range(start_index, start_index + num_sequences)]
    for p in paths:
        check_overwrite(p, overwrite)
    for n, (i, p) in enumerate(zip(range(start_index, start_index + num_sequences), paths), 1):
        seq = render_sequence(config, sequence_seed(seed, i))
        write_sequence(p, seq, overwrite=overwrite, extra_meta=dict(dataset_seed=int(seed), index=i))
        if progress is not None:
            progress(n, num_sequences)
    return paths
