"""The metrics of an evaluation: names and weights from the command line, instances, per-frame values."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from vpcli.errors import UsageError

CHUNK_VALUES = 2**19           # numbers per metric call on CPU (~42 frames at 64x64x3, 5 at 128x256x3)
CHUNK_VALUES_ACCEL = 2**26     # on GPUs large batches are what is fast


@dataclass
class MetricRunner:
    """One metric as the evaluator uses it: per-frame values ``(B, T)`` (+ PSNR's capped mask)."""

    name: str
    kind: str                   # "frame" | "label" | "video_set"
    higher_is_better: bool
    unit: str
    impl: Any
    settings: dict[str, Any] = field(default_factory=dict)

    def per_frame(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Values ``(B, T)`` of ``B,T,...`` inputs (and PSNR's capped mask), computed a few frames at a time.

        Every value depends on one frame pair only, so the ``B*T`` frames are scored in chunks of
        about :data:`CHUNK_VALUES` numbers on CPU: small working sets stay in cache, measured
        2-4x faster than one call over hundreds of frames (PSNR/SSIM at 64x64 and 128x256).
        """
        b, t = pred.shape[:2]
        flat_p = pred.reshape(b * t, 1, *pred.shape[2:])  # (B*T),1,...: one frame per "video"
        flat_t = target.reshape(b * t, 1, *target.shape[2:])
        per_frame_values = max(1, math.prod(pred.shape[2:]))
        step = max(1, (CHUNK_VALUES if pred.device.type == "cpu" else CHUNK_VALUES_ACCEL) // per_frame_values)
        values, capped = [], []
        for i in range(0, b * t, step):
            p, g = flat_p[i:i + step], flat_t[i:i + step]
            if self.name == "psnr":
                v, c = self.impl.with_capped(p, g)
                capped.append(c.reshape(-1).cpu())
            else:
                v = self.impl(p, g)
            values.append(v.reshape(-1).float().cpu())
        out = torch.cat(values).view(b, t)
        return out, (torch.cat(capped).view(b, t) if capped else None)


def parse_metric_names(text: str | list[str]) -> list[str]:
    """``"psnr,SSIM,ms_ssim"`` -> canonical names; an unknown name raises UsageError (exit 2) listing valid ones."""
    from vpcli.metrics import get_metric
    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")
    names: list[str] = []
    for part in parts:
        part = str(part).strip()
        if not part:
            continue
        name = get_metric(part).name
        if name not in names:
            names.append(name)
    if not names:
        raise UsageError("no metric given", "pass --metric psnr,ssim (valid: see `vpcli eval --help`)")
    return names


def parse_metric_weights(items: list[str] | dict[str, str] | None) -> dict[str, str]:
    """``["lpips=path.safetensors", "fvd=i3d-kinetics400"]`` -> ``{"lpips": ..., "fvd": ...}``."""
    from vpcli.metrics import get_metric
    if not items:
        return {}
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip() or not value.strip():
                raise UsageError(f"--metric-weights expects METRIC=WEIGHTS, got {item!r}",
                                 "e.g. --metric-weights lpips=lpips-alex.safetensors")
            pairs.append((key, value))
    out = {}
    for key, value in pairs:
        name = get_metric(key.strip()).name
        if name not in ("lpips", "csim", "fvd"):
            raise UsageError(f"metric {name!r} takes no weights", "only lpips, csim and fvd use pretrained networks")
        out[name] = str(value).strip()
    return out


def build_metrics(names: list[str], *, device: str = "cpu", metric_weights: dict[str, str] | None = None,
                  untrained_metrics: bool = False, lpips_net: str = "alex", num_classes: int = 19,
                  miou_classes: str | None = None, seed: int = 0,
                  missing: list[dict[str, str]] | None = None) -> list[MetricRunner]:
    """Instantiate the metrics (resolving pretrained weights for LPIPS, CSIM and FVD).

    A metric whose weights cannot be had (not on disk, not downloadable offline, a bad file)
    raises :class:`WeightsError`; with a ``missing`` list it is left out instead and described
    there (:func:`missing_entry`: metric, reason, how to enable it), so the others still run.
    """
    from vpcli.errors import ChecksumError, WeightsError
    runners = []
    for name in names:
        try:
            runners.append(_build_metric(name, device=device, weights=metric_weights or {},
                                         untrained_metrics=untrained_metrics, lpips_net=lpips_net,
                                         num_classes=num_classes, miou_classes=miou_classes, seed=seed))
        except WeightsError as e:
            if missing is not None:
                missing.append(missing_entry(name, e, (metric_weights or {}).get(name), lpips_net))
                continue
            if isinstance(e, ChecksumError):
                raise  # says what to do already
            raise WeightsError(e.message, f"{e.hint}; or --metric-weights {name}=FILE_OR_NAME, or "
                                          f"--untrained-metrics for a smoke test") from None
    return runners


# Which frames and samples the evaluator feeds FVD (protocol.py, folders.py); the metric adds its
# resize and embedding (FVD.protocol). Together: results.json's settings.fvd_protocol.
FVD_EVAL_PROTOCOL = {
    "sample": "the first sample of each sequence (a random draw, not best-of-N)",
    "context": "included when vpcli eval predicts (context + predicted frames vs the real clip of that length); "
               "folder mode: the frames of the prediction files vs the same ground-truth frames",
}

# The weights a metric resolves when --metric-weights does not name others, and what they hold.
DEFAULT_METRIC_WEIGHTS = {"lpips": "lpips-{net}", "csim": "vgg16-imagenet", "fvd": "i3d-kinetics400"}
_WEIGHTS_FILES = {"lpips": "the LPIPS heads with the {net} backbone", "csim": "torchvision's ImageNet VGG16",
                  "fvd": "Kinetics-400 Inception-I3D"}


def missing_entry(name: str, error: Exception, given: str | None, lpips_net: str = "alex") -> dict[str, str]:
    """What results.json says of a metric that could not be computed: ``metric``, ``reason`` (one
    line), ``enable`` (a command or the options that make it work) and the resolver's full ``hint``."""
    from vpcli.errors import ChecksumError
    wanted = given or DEFAULT_METRIC_WEIGHTS.get(name, "").format(net=lpips_net)
    files = _WEIGHTS_FILES.get(name, "its weights").format(net=lpips_net)
    if isinstance(error, ChecksumError):  # its hint says what to do with the bad file
        enable = getattr(error, "hint", None) or f"replace the file, or pass --metric-weights {name}=FILE"
    elif _in_manifest(wanted):
        enable = f"vpcli weights download {wanted}, or --metric-weights {name}=FILE holding {files}"
    else:
        enable = (f"--metric-weights {name}=FILE holding {files}, or --untrained-metrics for a smoke test "
                  f"(values not comparable)")
    return {"metric": name, "weights": wanted, "reason": getattr(error, "message", str(error)), "enable": enable,
            "hint": getattr(error, "hint", None) or ""}


def _in_manifest(name: str) -> bool:
    from vpcli.errors import VpcliError
    from vpcli.weights.manifest import load_manifests
    try:
        return bool(name) and name in load_manifests()
    except (VpcliError, OSError):  # a broken manifest is reported where it is used, not here
        return False


def _build_metric(name: str, *, device: str, weights: dict[str, str], untrained_metrics: bool, lpips_net: str,
                  num_classes: int, miou_classes: str | None, seed: int) -> MetricRunner:
    from vpcli.metrics import get_metric
    from vpcli.metrics.segmentation import HVP_MOVING_CLASSES
    cls = get_metric(name)
    settings: dict[str, Any] = {}
    if name == "lpips":
        kw = {"pretrained": not untrained_metrics}
        if name in weights:
            kw["weights"] = weights[name]
        torch.manual_seed(seed)  # random heads (untrained) are reproducible
        impl = cls(lpips_net, **kw).to(device)
        settings = {"net": impl.net_name, "weights": weights.get(name, "default")}
    elif name == "csim":
        kw = {"pretrained": not untrained_metrics}
        if name in weights:
            kw["weights"] = weights[name]
        torch.manual_seed(seed)
        impl = cls(**kw).to(device)
        settings = {"weights": weights.get(name, "vgg16-imagenet")}
    elif name == "fvd":
        from vpcli.metrics.i3d import InceptionI3d
        if untrained_metrics:
            torch.manual_seed(seed)
            impl = cls(model=InceptionI3d(), device=device)
        else:
            impl = cls(weights.get(name, "i3d-kinetics400"), device=device)
        settings = {"weights": weights.get(name, "i3d-kinetics400"), "resize": impl.resize,
                    "fvd_protocol": {**impl.protocol, **FVD_EVAL_PROTOCOL}}
    elif name == "miou":
        classes: Any = None
        if miou_classes not in (None, "", "all"):
            if miou_classes == "hvp-moving":
                classes = HVP_MOVING_CLASSES
            else:
                try:
                    classes = [int(c) for c in str(miou_classes).split(",")]
                except ValueError:
                    raise UsageError(f"--miou-classes expects all, hvp-moving or ids like 11,12,13; "
                                     f"got {miou_classes!r}") from None
        try:
            impl = cls(num_classes, classes=classes, accumulate=True)
        except ValueError as e:
            raise UsageError(f"miou: {e}") from None
        settings = {"num_classes": num_classes, "classes": list(classes) if classes else "all present"}
    else:
        impl = cls()
    if untrained_metrics and name in ("lpips", "csim", "fvd"):
        settings["weights"] = "untrained (random init): values are NOT comparable with published numbers"
    return MetricRunner(name, cls.kind, bool(cls.higher_is_better), getattr(cls, "unit", ""), impl, settings)

