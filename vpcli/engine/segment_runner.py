"""The engine behind `vpcli segment`: DeepLabV3+ label maps for every frame of every input.

Per input ``OUT/<name>/``::

    labels/00000.png ...   palette PNGs whose pixel indices are the class ids
    labels.npz             ``labels`` uint8 (T, H, W) and ``classes`` (read with vpcli.io.labels.read_labels_npz)
    overlay.mp4            the label colours blended over the frames (H.264)
    meta.json              inputs, weights name + sha256, sizes, timings (io.runmeta.run_meta)

Frames are streamed: decoded, run through the model ``batch_size`` at a time, and written
before the next batch is decoded; the ``labels.npz`` stack is spooled to disk, never held in
memory. The folder is written under a temporary name and renamed when complete.

Inference size: ``size=(H, W)`` resizes every frame to exactly that. Otherwise a frame larger
than the size the weights were trained at (``input_size`` in their config) is shrunk, keeping its
aspect ratio, to fit inside it -- DeepLab's receptive field and ASPP rates are tuned to object
sizes at that scale, and CPU time grows with the pixel count -- while smaller frames run at their
own size (never enlarged). We resize rather than tile: tiles cut objects and lose the image-level
pooling context. The label maps are resized back to the frame size with nearest neighbour, so
every output pixel holds a real class id.

Nothing here prints; progress goes to ``callback(event, record)``.
"""
from __future__ import annotations

import itertools
import json
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vpcli.engine.options import DeviceOptions, check_device, check_memory
from vpcli.errors import InputError, UsageError, VpcliError, WeightsError
from vpcli.io.runmeta import run_meta, write_meta
from vpcli.io.sources import collect_inputs, parse_size

__all__ = [
    "DEFAULT_WEIGHTS",
    "SegmentOptions",
    "Segmenter",
    "inference_size",
    "load_segmenter",
    "resolve_palette",
    "segment",
    "segment_clip",
]

DEFAULT_WEIGHTS = "deeplabv3plus-mobilenet-synthstreet"
# Peak memory of one DeepLabV3+ forward pass per input pixel (fp32 activations, the full-size
# logits and their argmax): 335-490 bytes measured for the MobileNet model at 256x256 to
# 1024x1024, batch 1-4. segment() refuses a --size x --batch-size that needs more than is free.
BYTES_PER_PIXEL = 400
CONFIG_SIDECARS = ("{stem}.config.json", "{stem}.config.yaml", "{stem}.json", "config.json", "config.yaml")
Callback = Callable[[str, dict[str, Any]], None]


# ------------------------------------------------------------------------------------- weights

def _read_yaml(path: Path, error=WeightsError) -> Any:
    import yaml
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise error(f"cannot read {path}: {str(e).splitlines()[0]}", "it must be a JSON or YAML file") from None


def _read_config_file(path: Path) -> dict[str, Any]:
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise WeightsError(f"the weights config {path} must hold a mapping", "see the config.json vpcli writes")
    return data


def _config_beside(path: Path) -> tuple[dict[str, Any], str]:
    """The config of a weights file: a sidecar file (``CONFIG_SIDECARS``), else its safetensors metadata."""
    for pattern in CONFIG_SIDECARS:
        side = path.parent / pattern.format(stem=path.stem)
        if side.is_file():
            return _read_config_file(side), str(side)
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise WeightsError(f"{path} is not a readable safetensors file: {str(e).splitlines()[0]}",
                           "pass DeepLabV3+ weights written by vpcli (or convert VainF's with "
                           "vpcli weights convert --from deeplab-vainf FILE --arch mobilenet --out OUT.safetensors)") from None
    if "vpcli_config" in meta:
        return json.loads(meta["vpcli_config"]), f"{path} (metadata)"
    raise WeightsError(f"no config found for {path}",
                       f"put a {path.stem}.config.json (the model config) next to it")


def _is_torch_checkpoint(path: Path) -> bool:
    """A PyTorch pickle (zip container or legacy protocol-2 stream), e.g. VainF's ``.pth``."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def _vainf_arch(backbone: str) -> str:
    from vpcli.weights.convert_deeplab import VAINF_ARCHS
    return {v: k for k, v in VAINF_ARCHS.items()}[backbone]


def _vainf_checkpoint(path: Path, cfg: dict[str, Any] | None) -> tuple[dict, dict[str, Any], str]:
    """Convert VainF's ``.pth`` on the fly; without a config, the backbone and class count are read
    from the tensors (output stride 16, as all published checkpoints)."""
    from vpcli.weights.convert_deeplab import (
        convert_deeplab_vainf,
        load_vainf_checkpoint,
        vainf_config,
    )
    theirs = load_vainf_checkpoint(path)
    if cfg is None:
        keys = set(theirs)
        backbone = ("mobilenetv2" if any(k.startswith("backbone.low_level_features.") for k in keys) else
                    "resnet101" if "backbone.layer3.22.conv1.weight" in keys else "resnet50")
        k = int(theirs["classifier.classifier.3.weight"].shape[0]) if "classifier.classifier.3.weight" in theirs else 19
        separable = any(".body.0." in key for key in keys)
        cfg = vainf_config(_vainf_arch(backbone), num_classes=k, separable=separable).to_dict()
        where = f"{path} (VainF checkpoint, config inferred)"
    else:
        where = f"{path} (VainF checkpoint)"
    backbone = cfg.get("backbone", "mobilenetv2")
    return convert_deeplab_vainf(theirs, _vainf_arch(backbone)), cfg, where


@dataclass
class Segmenter:
    """A loaded DeepLabV3+ with its label set, ready for :func:`segment_clip`."""

    model: Any  # DeepLabV3Plus
    config: Any  # DeepLabConfig
    path: Path
    name: str | None
    sha256: str | None
    device: Any
    channels_last: bool = True
    precision: str = "fp32"  # "bf16": autocast (faster on CPUs with AVX512-BF16/AMX; labels ~99% equal)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def weights_record(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "path": str(self.path), "arch": "deeplabv3plus"}

    def label_batch(self, frames: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
        """``uint8 (H, W, 3)`` frames -> class ids ``uint8 (B, h, w)`` at inference size ``size``."""
        import cv2
        import torch
        h, w = size
        resized = [f if f.shape[:2] == (h, w) else
                   cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA if h <= f.shape[0] and w <= f.shape[1]
                              else cv2.INTER_LINEAR) for f in frames]
        x = torch.from_numpy(np.stack(resized)).to(self.device)  # (B, h, w, 3) uint8
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, h, w) in [0, 1]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        with torch.inference_mode(), amp:
            ids = self.model.logits(x).argmax(1)  # (B, h, w)
        return ids.to(torch.uint8).cpu().numpy()


def _resolve(weights: str | os.PathLike | None, manifests) -> tuple[Path, str | None, str | None, dict | None, str]:
    """(weights file, manifest name or None, sha256, config dict, where the config came from)."""
    from vpcli.weights import file_sha256, load_manifests, resolve_weights
    registry = load_manifests(manifests or ())
    spec = DEFAULT_WEIGHTS if weights is None else weights
    if isinstance(spec, str) and spec in registry:  # a manifest name (names never contain '/')
        entry = registry.get(spec)
        if entry.task != "segmenter" or entry.arch != "deeplabv3plus":
            raise UsageError(f"weights '{entry.name}' are {entry.task} weights ({entry.arch}), not a DeepLabV3+ "
                             "segmenter", "see `vpcli weights list` for segmenter weights")
        resolved = resolve_weights(spec, manifests=registry)  # bundled / cached / downloaded, sha256 checked
        return resolved.path, entry.name, resolved.sha256, entry.load_config(), f"manifest entry {entry.name}"
    if weights is None:
        raise WeightsError(f"the default segmentation weights '{DEFAULT_WEIGHTS}' are not installed",
                           "reinstall vpcli (they ship with it), or pass --weights PATH to a DeepLabV3+ "
                           ".safetensors file; VainF's Cityscapes checkpoints convert with "
                           "vpcli weights convert --from deeplab-vainf FILE --arch ARCH --out OUT.safetensors")
    # An explicit path (or a bare word naming an existing file); an unknown name raises
    # "unknown weights" with the closest manifest names, a missing path "weights file not found".
    resolved = resolve_weights(spec, manifests=registry)
    path, sha = resolved.path, resolved.sha256
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise WeightsError(f"{path} holds {len(files)} .safetensors files, expected one",
                               "pass the weights file itself with --weights")
        path, sha = files[0], file_sha256(files[0])
    try:
        cfg, where = _config_beside(path)
    except WeightsError:
        if not _is_torch_checkpoint(path):
            raise
        cfg, where = None, str(path)  # a VainF .pth: load_segmenter infers its config
    return path, None, sha, cfg, where


def load_segmenter(weights: str | os.PathLike | None = None, *, device: str = "cpu", manifests=(),
                   channels_last: bool = True, precision: str = "fp32") -> Segmenter:
    """Resolve ``weights`` (manifest name, file or folder; default: the bundled synthetic-street
    model), build the model from its config and load the tensors (fp16 files load into fp32).

    Weights are vpcli safetensors with a config (sidecar ``<stem>.config.json`` or metadata), or a
    VainF/DeepLabV3Plus-Pytorch ``.pth`` checkpoint, converted in memory (read with
    ``weights_only=True``; config from the manifest entry or sidecar, else inferred).
    """
    import torch
    from safetensors.torch import load_file

    from vpcli.preprocess.deeplab import DeepLabConfig, DeepLabV3Plus
    if precision not in ("fp32", "bf16"):
        raise UsageError(f"precision must be fp32 or bf16, got {precision!r}", "pass precision='fp32' or 'bf16'")
    dev = _device(device)
    path, name, sha, cfg_dict, where = _resolve(weights, manifests)
    state = None
    if _is_torch_checkpoint(path):  # VainF's .pth (e.g. a pinned-URL manifest entry): convert in memory
        state, cfg_dict, where = _vainf_checkpoint(path, cfg_dict)
    arch = cfg_dict.get("arch", "deeplabv3plus")
    if arch != "deeplabv3plus":
        raise WeightsError(f"{where} describes a {arch!r} model, not deeplabv3plus", "pass DeepLabV3+ weights")
    try:
        config = DeepLabConfig.from_dict(cfg_dict)
    except VpcliError as e:
        raise WeightsError(f"bad model config in {where}: {e.message}", e.hint) from None
    model = DeepLabV3Plus(config)
    try:
        state = load_file(str(path)) if state is None else state
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{path} is not a readable safetensors file: {str(e).splitlines()[0]}",
                           "re-download or re-export the weights") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if "classifier.weight" in state and state["classifier.weight"].shape[0] != config.num_classes:
        raise WeightsError(f"{path} predicts {state['classifier.weight'].shape[0]} classes but its config "
                           f"({where}) says num_classes={config.num_classes}", "fix num_classes in the config")
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what} {', '.join(items[:2])}" for what, items in
                           (("missing", missing), ("unexpected", unexpected), ("shape", wrong)) if items)
        raise WeightsError(f"{path} does not fit the DeepLabV3+ described by {where} ({detail})",
                           "pass the config the weights were trained with")
    model.load_state_dict(state)
    model.eval().to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Segmenter(model, config, path, name, sha, dev, channels_last, precision)


def _device(device: str):
    import torch
    return torch.device(check_device(str(device)))  # the check every command shares (engine/options.py)


# ------------------------------------------------------------------------------------- palette

def _voc_palette(n: int) -> np.ndarray:
    """The Pascal VOC colour map (bit-interleaved class ids): distinct colours for any class count."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def resolve_palette(spec: str | os.PathLike | None, config) -> tuple[np.ndarray, tuple[str, ...]]:
    """(colours ``uint8 (K, 3)``, class names) for ``--palette`` against the model's ``num_classes``.

    ``None``/``"auto"``: the model's own palette, else Cityscapes for 19 classes, else the VOC
    colour map. ``"cityscapes"``: requires a 19-class model. A file (JSON/YAML): a list of
    ``[r, g, b]``, a mapping ``{class name: [r, g, b]}`` or ``{"classes": [...], "palette": [...]}``.
    """
    from vpcli.io.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
    k = config.num_classes
    own = tuple(config.classes) if config.classes else None
    if spec is None or str(spec) == "auto":
        if config.palette is not None:
            pal = np.asarray(config.palette, np.uint8)
        elif k == len(CITYSCAPES_PALETTE):
            pal = CITYSCAPES_PALETTE
        else:
            pal = _voc_palette(k)
        names = own or (CITYSCAPES_CLASSES if k == len(CITYSCAPES_CLASSES) else tuple(f"class_{i}" for i in range(k)))
        return pal, names
    if str(spec) == "cityscapes":
        pal, names, what = CITYSCAPES_PALETTE, CITYSCAPES_CLASSES, "the cityscapes palette"
    else:
        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"--palette {spec}: no such file", "use auto, cityscapes, or a JSON/YAML palette file")
        pal, names = _palette_from_data(_read_yaml(path, UsageError), path)
        what = f"palette {path}"
    if len(pal) != k:
        raise UsageError(f"the segmentation weights predict {k} classes but {what} has {len(pal)}",
                         f"pass --palette auto (the weights' own classes) or a palette file with {k} colours")
    return np.asarray(pal, np.uint8), tuple(names)


def _palette_from_data(data, path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    if isinstance(data, dict) and "palette" in data:
        colours, names = data["palette"], data.get("classes")
    elif isinstance(data, dict):
        names, colours = list(data), list(data.values())
    else:
        colours, names = data, None
    try:
        pal = np.asarray(colours, dtype=np.int64)
    except (TypeError, ValueError):
        pal = np.zeros((0,))
    if pal.ndim != 2 or pal.shape[1] != 3 or pal.min(initial=0) < 0 or pal.max(initial=0) > 255:
        raise UsageError(f"palette {path} must list one [r, g, b] colour (0..255) per class",
                         'e.g. [[128, 64, 128], [244, 35, 232]] or {"road": [128, 64, 128]}')
    names = tuple(str(n) for n in names) if names else tuple(f"class_{i}" for i in range(len(pal)))
    if len(names) != len(pal):
        raise UsageError(f"palette {path} has {len(pal)} colours but {len(names)} class names", "give one of each")
    return pal.astype(np.uint8), names


# ------------------------------------------------------------------------------------- one clip

def inference_size(frame_hw: tuple[int, int], model_hw: tuple[int, int] | None,
                   requested: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (h, w) the model runs at for frames of ``frame_hw`` (see the module doc)."""
    if requested is not None:
        return tuple(requested)
    if model_hw is None:
        return tuple(frame_hw)
    (fh, fw), (mh, mw) = frame_hw, model_hw
    scale = min(1.0, mh / fh, mw / fw)
    if scale >= 1.0:
        return fh, fw
    return max(8, round(fh * scale)), max(8, round(fw * scale))


class _SpooledLabelsNpz:
    """Writes ``labels.npz`` (``labels`` uint8 (T, H, W) + ``classes``) without holding the stack:
    frames are appended to a raw spool file, which is streamed into the zip member at the end
    (the frame count is only certain once decoding has finished)."""

    def __init__(self, path: Path, classes: Sequence[str]):
        self.path, self.classes = path, tuple(classes)
        self.spool_path = path.with_name(f".{path.name}.spool")
        self.spool = open(self.spool_path, "wb")
        self.shape: tuple[int, int] | None = None
        self.count = 0

    def __enter__(self) -> _SpooledLabelsNpz:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # the caller's temporary folder goes away; just release the file
            self.spool.close()

    def append(self, labels_hw: np.ndarray) -> None:
        if self.shape is None:
            self.shape = labels_hw.shape
        self.spool.write(np.ascontiguousarray(labels_hw, dtype=np.uint8).tobytes())
        self.count += 1

    def close(self) -> None:
        import io
        self.spool.close()
        header = {"descr": "|u1", "fortran_order": False, "shape": (self.count, *self.shape)}
        with zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            with zf.open("labels.npy", "w", force_zip64=True) as member, open(self.spool_path, "rb") as spool:
                np.lib.format.write_array_header_1_0(member, header)
                while chunk := spool.read(1 << 22):
                    member.write(chunk)
            buf = io.BytesIO()
            np.save(buf, np.array(self.classes, dtype=np.str_), allow_pickle=False)
            zf.writestr("classes.npy", buf.getvalue())
        self.spool_path.unlink()


def segment_clip(seg: Segmenter, path: Path, out_dir: Path, *, palette: np.ndarray, classes: Sequence[str],
                 size: tuple[int, int] | None = None, batch_size: int = 8, overwrite: bool = False,
                 alpha: float = 0.5, callback: Callback | None = None, meta: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Segment one clip into ``out_dir`` (atomically); return its JSON record."""
    from vpcli.io.atomic import atomic_dir
    from vpcli.io.labels import overlay, write_label_png
    from vpcli.io.video import VideoWriter, iter_frames, probe
    t_start = time.perf_counter()
    info = probe(path)  # unreadable / empty inputs fail here, before any output exists
    frame_hw = (info.height, info.width)
    run_hw = inference_size(frame_hw, seg.config.input_size, size)
    timings = {"decode_s": 0.0, "inference_s": 0.0, "write_s": 0.0}
    done = 0
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "labels").mkdir()
        with _SpooledLabelsNpz(tmp / "labels.npz", classes) as npz, \
                VideoWriter(tmp / "overlay.mp4", fps=info.fps) as video:
            frames = iter_frames(path)  # streamed: one batch of decoded frames in memory at a time
            while True:
                t0 = time.perf_counter()
                batch = list(itertools.islice(frames, batch_size))
                t1 = time.perf_counter()
                timings["decode_s"] += t1 - t0
                if not batch:
                    break
                ids = seg.label_batch(batch, run_hw)  # (B, h, w) uint8
                t2 = time.perf_counter()
                timings["inference_s"] += t2 - t1
                for frame, lab in zip(batch, ids):
                    if lab.shape != frame.shape[:2]:
                        import cv2
                        lab = cv2.resize(lab, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
                    write_label_png(tmp / "labels" / f"{done:05d}.png", lab, palette)
                    video.write(overlay(frame, lab, alpha, palette))
                    npz.append(lab)
                    done += 1
                timings["write_s"] += time.perf_counter() - t2
                if callback is not None:
                    callback("progress", {"input": str(path), "done": done, "total": info.num_frames})
            if done == 0:
                raise InputError(f"{path} has no frames", "pass a clip with at least one frame")
        total = time.perf_counter() - t_start
        timings = {k: round(v, 3) for k, v in timings.items()}
        record = {"output": str(out_dir), "frames": done, "size": list(frame_hw), "inference_size": list(run_hw),
                  "seconds": round(total, 3), "frames_per_s": round(done / max(total, 1e-9), 2)}
        if done < info.num_frames:  # the decoder stopped early: say so instead of passing silently
            record["warning"] = f"decoded {done} of the {info.num_frames} frames the input declares (truncated?)"
        import torch
        write_meta(tmp, run_meta(
            command="segment", input=str(path), method="deeplabv3plus", weights=seg.weights_record(),
            config=seg.config.to_dict(), classes=list(classes), palette=np.asarray(palette).tolist(),
            source={"frames": info.num_frames, "width": info.width, "height": info.height, "fps": info.fps,
                    "codec": info.codec},
            resize_policy="fit inside the weights' input_size, never enlarge; labels back by nearest neighbour"
            if size is None else "resized to --size; labels back by nearest neighbour",
            batch_size=batch_size, device=str(seg.device), precision=seg.precision, torch=torch.__version__,
            timings={**timings, "total_s": round(total, 3)}, **(meta or {}), **record))
    return record


# ------------------------------------------------------------------------------------- command

def _run_all(items, fn) -> list[dict[str, Any]]:
    """The library's loop: every input is attempted; failures become records with the error."""
    records = []
    for item in items:
        try:
            records.append({"input": str(item[0]), "ok": True, **fn(item)})
        except VpcliError as e:
            records.append({"input": str(item[0]), "ok": False, "error": str(e)})
    return records


@dataclass(frozen=True, kw_only=True)
class SegmentOptions(DeviceOptions):
    """Every option of `vpcli segment` (inputs and output folder aside), checked on construction.

    ``size`` may be given as ``"HxW"``; it is stored as the pair ``(H, W)``.
    ``weights=None`` means :data:`DEFAULT_WEIGHTS` (looked up when the run starts).
    """

    weights: str | os.PathLike | None = None
    size: tuple[int, int] | None = None
    palette: str | None = None
    precision: str = "fp32"
    alpha: float = 0.5
    manifests: tuple[str | os.PathLike, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"--alpha (overlay opacity) must be in [0, 1], got {self.alpha!r}", "e.g. --alpha 0.5")
        if self.precision not in ("fp32", "bf16"):
            raise UsageError(f"--precision must be fp32 or bf16, got {self.precision!r}", "pass --precision fp32 or bf16")
        # frozen: normalise once, here; DeepLab's stride-8 features need 8 pixels a side
        object.__setattr__(self, "size", parse_size(self.size, min_side=8))
        object.__setattr__(self, "manifests", tuple(self.manifests))


def segment(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, options: SegmentOptions | None = None, *,
            callback: Callback | None = None, for_each: Callable[[list, Callable], Any] | None = None) -> Any:
    """Segment every input into ``out/<name>/``.

    The weights are loaded and checked against the palette once, before any input is read (a
    setup error raises). Then ``for_each(items, fn)`` runs ``fn`` on each ``(path, name)`` item
    and its result is returned: the CLI passes ``run_per_input`` (one-line errors, exit code);
    the default attempts every input and returns one record per input (``ok`` false with the
    ``error`` for those that failed).
    """
    import torch

    o = options if options is not None else SegmentOptions()
    torch.manual_seed(o.seed)  # inference is deterministic; seeded anyway for any stochastic layer
    if o.size is not None:  # a --size runs every frame at that size: refuse one that cannot fit first
        h, w = o.size
        check_memory(BYTES_PER_PIXEL * h * w * o.batch_size, o.device, f"segment --size {h}x{w} --batch-size "
                     f"{o.batch_size}", "lower --batch-size or --size (the weights' own size needs no --size)")
    seg = load_segmenter(o.weights, device=o.device, manifests=o.manifests, precision=o.precision)
    colours, classes = resolve_palette(o.palette, seg.config)
    items = collect_inputs(list(inputs), recursive=o.recursive, shard=o.shard)
    if not items:
        raise InputError("no inputs to segment", "pass video files, frame folders, or a folder of them")
    out = Path(out)
    if callback is not None:
        callback("start", {"inputs": len(items), "weights": seg.name or str(seg.path), "sha256": seg.sha256,
                           "classes": len(classes), "device": str(seg.device), "out": str(out)})

    def one(item: tuple[Path, str]) -> dict[str, Any]:
        path, name = item
        if callback is not None:
            callback("input", {"input": str(path), "name": name})
        record = segment_clip(seg, path, out / name, palette=colours, classes=classes, size=o.size,
                              batch_size=o.batch_size, overwrite=o.overwrite, alpha=o.alpha, callback=callback,
                              meta={"seed": o.seed, "name": name})
        if callback is not None:
            callback("done", {"input": str(path), **record})
        return record

    return (for_each or _run_all)(items, one)
