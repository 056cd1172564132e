"""LPIPS v0.1 (Zhang et al., CVPR 2018) with AlexNet or VGG16 features, in plain torch.

The formula of the reference implementation (``lpips`` 0.1.4, ``lpips/lpips.py``):

1. inputs in ``[-1, 1]`` (ours are ``[0, 1]``: ``x * 2 - 1``), then the ``ScalingLayer``
   ``(x - shift) / scale`` with ``shift = (-0.030, -0.088, -0.188)`` and
   ``scale = (0.458, 0.448, 0.450)`` (version 0.1; 0.0 skipped this step);
2. features at five ReLUs of the backbone (AlexNet relu1..relu5; VGG16 relu1_2, relu2_2,
   relu3_3, relu4_3, relu5_3);
3. each feature map unit-normalised over channels, ``f / (||f||_2 + 1e-10)``;
4. squared difference, a 1x1 convolution to one channel without bias (the "linear head",
   non-negative weights learned on the BAPPS human judgements), mean over space;
5. the sum over the five layers.

Weights. The backbones are torchvision's ImageNet AlexNet / VGG16 (manifest entries
``alexnet-imagenet`` / ``vgg16-imagenet``: ``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``,
read with ``torch.load(weights_only=True)``, same keys as ours) and the heads are the
``lpips/weights/v0.1/{alex,vgg}.pth`` files of richzhang/PerceptualSimilarity (= the ``lpips``
wheel; keys ``lin{k}.model.1.weight`` -> ours ``lin{k}.weight``). The heads' entries,
``lpips-alex`` / ``lpips-vgg``, ``require`` the backbone entry, so ``vpcli weights download
lpips-alex`` fetches both and ``LPIPS("alex")`` loads the heads from the entry's file and the
backbone from its requirement. An explicit ``weights`` may also be

- one combined safetensors file written by :func:`save_lpips_weights` (backbone + heads), or
- the heads alone (the ``lpips`` ``.pth``, or safetensors), in which case the backbone is
  resolved separately (``backbone_weights``, default ``alexnet-imagenet`` / ``vgg16-imagenet``).

``LPIPS(net, pretrained=False)`` builds a randomly initialised metric (seed it yourself) for tests
and benchmarks; its values are not LPIPS values.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from vpcli.errors import DataFormatError, WeightsError
from vpcli.metrics._checks import (
    check_batch_size,
    check_pair,
    chunks,
    flatten_frames,
    load_tensor_file,
    resolve_weights_file,
)
from vpcli.metrics.backbones import VGG16, AlexNet, convert_torchvision_state_dict

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10  # lpips.normalize_tensor(in_feat, eps=1e-10)

# torchvision's pinned checkpoints (the filename carries the first 8 hex digits of the sha256).
TORCHVISION_URLS = {
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
}


class _NetSpec:
    def __init__(self, arch: str, cls: type, taps: tuple[int, ...], channels: tuple[int, ...],
                 weights: str, backbone_weights: str):
        self.arch, self.cls, self.taps, self.channels = arch, cls, taps, channels
        self.weights, self.backbone_weights = weights, backbone_weights


# weights: the heads' manifest entry, which `requires` the backbone entry (both fetched by
# `vpcli weights download lpips-alex`); backbone_weights: that backbone, used when a heads file
# comes without one.
NETS = {
    "alex": _NetSpec("alexnet", AlexNet, AlexNet.RELU_TAPS, AlexNet.RELU_CHANNELS, "lpips-alex", "alexnet-imagenet"),
    "vgg": _NetSpec("vgg16", VGG16, VGG16.BLOCK_RELU_TAPS, VGG16.BLOCK_RELU_CHANNELS, "lpips-vgg", "vgg16-imagenet"),
}
_ALIASES = {"alexnet": "alex", "vgg16": "vgg"}

_HEAD_KEY = re.compile(r"^lin(\d+)\.(?:model\.[01]\.)?weight$")


def _spec(net: str) -> tuple[str, _NetSpec]:
    key = _ALIASES.get(net, net)
    if key not in NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; expected one of {sorted(NETS)}")
    return key, NETS[key]


def how_to_get_weights(net: str) -> str:
    key, spec = _spec(net)
    return f"LPIPS-{key} needs {spec.arch} and the LPIPS v0.1 heads: vpcli weights download {spec.weights}"


def convert_lpips_heads(state: dict[str, torch.Tensor], net: str) -> dict[str, torch.Tensor]:
    """Map the ``lpips`` head file (``lin{k}.model.1.weight``) onto our keys (``lin{k}.weight``).

    Also accepts heads saved without dropout (``lin{k}.model.0.weight``) or already in our
    naming. Checks the number of heads, their shapes and that every weight is non-negative.
    """
    key, spec = _spec(net)
    heads: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        m = _HEAD_KEY.match(name)
        if m:
            heads[f"lin{int(m.group(1))}.weight"] = value
    expected = {f"lin{k}.weight": (1, c, 1, 1) for k, c in enumerate(spec.channels)}
    if set(heads) != set(expected):
        raise WeightsError(f"LPIPS-{key} heads: expected keys {sorted(expected)}, found {sorted(heads) or 'none'}",
                           f"use the lpips v0.1 {key}.pth head file (lin0..lin{len(expected) - 1})")
    out = {}
    for name, shape in expected.items():
        value = heads[name]
        if tuple(value.shape) != shape:
            raise WeightsError(f"LPIPS-{key} heads: {name} has shape {tuple(value.shape)}, expected {shape}",
                               f"use the lpips v0.1 {key}.pth head file (this one is for another net?)")
        if bool((value < 0).any()):
            raise WeightsError(f"LPIPS-{key} heads: {name} has negative weights",
                               "LPIPS heads are non-negative (clamped in training); the file is not an LPIPS head")
        out[name] = value.detach().to(torch.float32).contiguous()
    return out


def _split_state(state: dict[str, torch.Tensor], net: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a loaded file into (heads in our naming, backbone in our ``net.`` naming); either may be empty."""
    _, spec = _spec(net)
    has_heads = any(_HEAD_KEY.match(k) for k in state)
    heads = convert_lpips_heads(state, net) if has_heads else {}
    backbone_keys = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    if not backbone_keys:
        backbone_keys = {k: v for k, v in state.items()
                         if k.startswith(("features.", "classifier.", "module.features.", "module.classifier."))}
    backbone = convert_torchvision_state_dict(backbone_keys, spec.arch, prefix="net.") if backbone_keys else {}
    return heads, backbone


def convert_lpips_weights(backbone_state: dict[str, torch.Tensor], heads_state: dict[str, torch.Tensor],
                          net: str = "alex") -> dict[str, torch.Tensor]:
    """One state dict for :class:`LPIPS`: a torchvision backbone state dict plus the ``lpips`` heads."""
    _, spec = _spec(net)
    state = convert_torchvision_state_dict(backbone_state, spec.arch, prefix="net.")
    state.update(convert_lpips_heads(heads_state, net))
    return state


def save_lpips_weights(backbone_file: str | os.PathLike, heads_file: str | os.PathLike,
                       out_file: str | os.PathLike, net: str = "alex", *, overwrite: bool = False) -> Path:
    """Read torchvision's backbone ``.pth`` and the ``lpips`` head ``.pth`` (safe loader) and write
    one safetensors file that ``LPIPS(net, weights=out_file)`` loads. The write is atomic."""
    from safetensors.torch import save_file

    from vpcli.io.atomic import atomic_path

    key, _ = _spec(net)
    state = convert_lpips_weights(load_tensor_file(Path(backbone_file)), load_tensor_file(Path(heads_file)), key)
    out_file = Path(out_file)
    with atomic_path(out_file, overwrite=overwrite) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "arch": f"lpips-{key}", "version": "0.1"})
    return out_file


class LPIPS(nn.Module):
    """LPIPS distance per frame: ``LPIPS("alex")(pred, target) -> (B, T)`` for ``B,T,C,H,W`` in ``[0, 1]``.

    ``weights``/``backbone_weights``: manifest names or paths (``"default"``: ``lpips-{net}`` and
    ``{arch}-imagenet``). ``pretrained=False`` skips loading (random init). Single-channel videos
    are repeated to RGB. Frames go through the backbone ``batch_size`` at a time.
    """

    name = "lpips"
    kind = "frame"
    higher_is_better = False

    def __init__(self, net: str = "alex", *, weights: str | os.PathLike = "default",
                 backbone_weights: str | os.PathLike = "default", pretrained: bool = True,
                 batch_size: int | None = 32):
        super().__init__()
        self.net_name, spec = _spec(net)
        self.taps = spec.taps
        self.batch_size = check_batch_size(batch_size)
        self.net = spec.cls()
        for k, c in enumerate(spec.channels):
            self.add_module(f"lin{k}", nn.Conv2d(c, 1, kernel_size=1, stride=1, padding=0, bias=False))
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            self.load_weights(spec.weights if weights == "default" else weights,
                              spec.backbone_weights if backbone_weights == "default" else backbone_weights)
        else:
            with torch.no_grad():  # random but valid heads: non-negative like the trained ones
                for lin in self.heads:
                    lin.weight.abs_()
        self.requires_grad_(False)
        self.eval()
        # NHWC convolutions are ~1.4x faster on CPU (oneDNN) and give the same values (to 1e-7).
        self.to(memory_format=torch.channels_last)

    @property
    def heads(self) -> list[nn.Conv2d]:
        return [getattr(self, f"lin{k}") for k in range(len(self.taps))]

    def load_weights(self, weights: str | os.PathLike, backbone_weights: str | os.PathLike | None = None) -> None:
        """Load heads and backbone: from an entry and the entries it ``requires`` (``lpips-alex``:
        the heads, requiring ``alexnet-imagenet``), from one combined file, or heads from one file
        and the backbone from ``backbone_weights``."""
        from vpcli.metrics._checks import required_parts

        spec = NETS[self.net_name]
        hint = how_to_get_weights(self.net_name)
        what = f"LPIPS-{self.net_name}"
        heads: dict[str, torch.Tensor] = {}
        backbone: dict[str, torch.Tensor] = {}
        for name in [weights, *(required_parts(weights) or [])]:
            path = resolve_weights_file(name, what, hint)
            h, b = _split_state(load_tensor_file(path), self.net_name)
            heads, backbone = heads or h, backbone or b
        if not heads:
            raise WeightsError(f"{what}: {weights} holds no LPIPS heads (lin0..lin4)", hint)
        if not backbone:
            if backbone_weights is None:
                raise WeightsError(f"{what}: {weights} holds only the heads and no backbone was given", hint)
            bpath = resolve_weights_file(backbone_weights, f"{what} backbone", hint)
            _, backbone = _split_state(load_tensor_file(bpath), self.net_name)
            if not backbone:
                raise WeightsError(f"{what}: {bpath} holds no {spec.arch} weights", hint)
        self.load_state_dict({**backbone, **heads}, strict=True)

    def distance(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """LPIPS between two image batches ``N,3,H,W`` in ``[-1, 1]`` (the reference's input range): ``(N,)``."""
        n = x0.shape[0]
        x = (torch.cat([x0, x1], dim=0) - self.shift) / self.scale  # both images through one pass: 2N,3,H,W
        x = x.contiguous(memory_format=torch.channels_last)
        total = torch.zeros(n, dtype=torch.float32, device=x.device)
        for feat, lin in zip(self.net(x, self.taps), self.heads):
            feat = feat / (feat.square().sum(dim=1, keepdim=True).sqrt() + NORM_EPS)  # unit length over channels
            diff = (feat[:n] - feat[n:]).square()
            total = total + lin(diff).mean(dim=(1, 2, 3))  # N,1,h,w -> N
        return total

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = check_pair(pred, target)
        b, t, c = pred.shape[:3]
        if c not in (1, 3):
            raise DataFormatError(f"LPIPS needs RGB (or grey) frames; got {c} channels", "pass B,T,3,H,W videos")
        device = self.shift.device
        x0_all, x1_all = flatten_frames(pred), flatten_frames(target)  # (B*T),C,H,W
        out = torch.empty(b * t, dtype=torch.float32)
        for sl in chunks(b * t, self.batch_size):
            x0 = x0_all[sl].to(device=device, dtype=torch.float32).expand(-1, 3, -1, -1) * 2 - 1
            x1 = x1_all[sl].to(device=device, dtype=torch.float32).expand(-1, 3, -1, -1) * 2 - 1
            out[sl] = self.distance(x0, x1).cpu()
        return out.view(b, t).to(pred.device)


def lpips(pred: torch.Tensor, target: torch.Tensor, *, net: str = "alex", model: LPIPS | None = None) -> torch.Tensor:
    """Per-frame LPIPS ``(B, T)``; builds (and resolves weights for) ``LPIPS(net)`` unless ``model`` is given."""
    model = model if model is not None else LPIPS(net)
    return model(pred, target)
