"""Input checks and small helpers shared by the metric modules.

Every metric validates its inputs the same way, so a user sees the same one-line error whatever
metric tripped over the data: videos are ``B,T,C,H,W`` floating tensors in ``[0, 1]`` with no NaN
or Inf; the two videos of a pair have the same shape; label maps are integer ``B,T,H,W``.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from vpcli.errors import DataFormatError, WeightsError

# Values a little outside [0, 1] (a decoder's overshoot) are tolerated; anything further is a
# sign of a wrong scale (0..255 uint8 frames, or [-1, 1] network outputs) and is refused.
RANGE_TOL = 1e-3


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def check_video(x: object, name: str, *, check_range: bool = True) -> torch.Tensor:
    """Return ``x`` if it is a finite floating ``B,T,C,H,W`` tensor in ``[0, 1]``; else raise."""
    if not isinstance(x, torch.Tensor):
        raise DataFormatError(f"{name} must be a torch.Tensor, got {type(x).__name__}",
                              "convert with torch.as_tensor(...) and lay it out as B,T,C,H,W")
    if x.ndim != 5:
        raise DataFormatError(f"{name} must be a 5-D video tensor B,T,C,H,W; got shape {_shape(x)}",
                              "add the missing axes, e.g. x[None] for one video or x[:, None] for single frames")
    if not x.is_floating_point():
        raise DataFormatError(f"{name} must be floating point in [0, 1]; got dtype {x.dtype}",
                              "for uint8 frames use x.float() / 255")
    if x.numel() == 0:
        raise DataFormatError(f"{name} is empty: shape {_shape(x)}", "pass at least one frame")
    finite = torch.isfinite(x).flatten(2).all(dim=2)  # B,T
    if not bool(finite.all()):
        b, t = (int(i) for i in (~finite).nonzero()[0])
        n_bad = int((~finite).sum())
        raise DataFormatError(f"{name} holds NaN or Inf in frame (b={b}, t={t}) ({n_bad} bad frame(s) in all)",
                              "check the model output for divergence, or drop those frames")
    if check_range:
        lo, hi = float(x.min()), float(x.max())
        if lo < -RANGE_TOL or hi > 1 + RANGE_TOL:
            raise DataFormatError(f"{name} values must lie in [0, 1]; got range [{lo:.4g}, {hi:.4g}]",
                                  "divide 0..255 frames by 255, map [-1, 1] outputs with (x + 1) / 2, "
                                  "or clamp a model's output with x.clamp(0, 1)")
    return x


def check_pair(pred: object, target: object, *, check_range: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Check both videos and that their shapes agree (the error names both shapes)."""
    pred = check_video(pred, "pred", check_range=check_range)
    target = check_video(target, "target", check_range=check_range)
    if pred.shape != target.shape:
        raise DataFormatError(f"pred and target shapes differ: pred {_shape(pred)} vs target {_shape(target)}",
                              "compare videos of the same length and size (B,T,C,H,W)")
    return pred, target


def check_labels(x: object, name: str) -> torch.Tensor:
    """Return ``x`` if it is an integer ``B,T,H,W`` label tensor; else raise."""
    if not isinstance(x, torch.Tensor):
        raise DataFormatError(f"{name} must be a torch.Tensor of class ids, got {type(x).__name__}",
                              "convert with torch.as_tensor(labels, dtype=torch.int64)")
    if x.ndim != 4:
        raise DataFormatError(f"{name} must be a 4-D label tensor B,T,H,W; got shape {_shape(x)}",
                              "labels are class ids, not one-hot maps: take argmax over the class axis first")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise DataFormatError(f"{name} must hold integer class ids; got dtype {x.dtype}",
                              "use .long() on label maps (argmax of logits for predictions)")
    return x


def flatten_frames(x: torch.Tensor) -> torch.Tensor:
    """``B,T,C,H,W`` -> ``(B*T),C,H,W`` (a view when possible)."""
    b, t = x.shape[:2]
    return x.reshape(b * t, *x.shape[2:])


def chunks(n: int, size: int | None) -> Iterator[slice]:
    """Slices that cover ``range(n)`` in pieces of at most ``size`` (all at once when ``None``)."""
    if size is None or size <= 0:
        size = max(n, 1)
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def check_batch_size(batch_size: int | None) -> int | None:
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    return batch_size


def resolve_weights_file(name_or_path: str | Path, what: str, hint: str) -> Path:
    """Resolve named weights through :mod:`vpcli.weights`, adding a metric-specific hint.

    A checksum failure is passed on unchanged (its message already says what to do).
    """
    from vpcli.errors import ChecksumError

    try:
        from vpcli.weights import resolve
    except ImportError as err:  # pragma: no cover - the weights package is part of vpcli
        raise WeightsError(f"cannot resolve {what} weights {str(name_or_path)!r}: vpcli.weights is unavailable",
                           hint) from err
    try:
        return Path(resolve(name_or_path))
    except ChecksumError:
        raise
    except WeightsError as err:
        # The metric's own one-line hint (the download command) replaces the resolver's, which
        # lists every known name; the resolver's reason stays in the message.
        raise WeightsError(f"{what} needs weights {str(name_or_path)!r}: {err.message}", hint) from err


def required_parts(name: str | Path) -> list[str] | None:
    """The entries a manifest entry ``requires`` (``lpips-alex``, the LPIPS heads, requires
    ``alexnet-imagenet``), resolved along with it by the metric; None for a path, an entry without
    requirements or a name no manifest knows."""
    if isinstance(name, Path) or not isinstance(name, str):
        return None
    from vpcli.errors import VpcliError
    try:
        from vpcli.weights.manifest import load_manifests

        registry = load_manifests()
    except (VpcliError, OSError):  # a broken manifest is reported by the resolver itself
        return None
    if name not in registry:
        return None
    parts = getattr(registry.get(name), "requires", None)
    return [str(p) for p in parts] if parts else None


def load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file, or from a ``.pth``/``.pt`` file with the safe loader.

    ``torch.load(weights_only=True)`` only rebuilds tensors and plain containers; it never runs
    code from the file (DESIGN.md: nothing unpickles an untrusted file).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"cannot read weights file {path}: {type(err).__name__}: {str(err).splitlines()[0]}",
                           "expected a .safetensors file or a plain state-dict .pth") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} does not hold a flat state dict of tensors",
                           "expected a .safetensors file or a plain state-dict .pth")
    return dict(obj)
