"""Convert VainF/DeepLabV3Plus-Pytorch checkpoints to vpcli's DeepLabV3+ (one-to-one).

VainF's checkpoints (``best_deeplabv3plus_mobilenet_cityscapes_os16.pth``, ``..._resnet101_...``)
are pickles of ``{"model_state": state_dict, "optimizer_state": ..., "best_score": np.float64,
...}``. They are read with ``torch.load(weights_only=True)`` -- nothing in them can run code --
allowing only the numpy scalar types that ``best_score`` needs. From the command line:
``vpcli weights convert --from deeplab-vainf FILE.pth --arch mobilenet --out OUT.safetensors``.

Name mapping (theirs -> ours); every tensor keeps its shape and values:

==========================================================  =========================================
VainF                                                       vpcli
==========================================================  =========================================
backbone.low_level_features.0.{0,1}                         backbone.stem.{conv,bn}
backbone.{low,high}_level_features.J.conv.*  (J = 1..17)    backbone.blocks.{J-1}.*
  J = 1 (t = 1): conv.0.{0,1} / conv.1 / conv.2             depthwise.{conv,bn} / project.conv / project.bn
  J > 1:  conv.0.{0,1} / conv.1.{0,1} / conv.2 / conv.3     expand.{conv,bn} / depthwise.{conv,bn} /
                                                            project.conv / project.bn
backbone.{conv1,bn1,layerN...} (ResNet)                     unchanged (torchvision names)
classifier.project.{0,1}                                    low_proj.{conv,bn}
classifier.aspp.convs.{0..3}.{0,1}                          aspp.branches.{0..3}.{conv,bn}
classifier.aspp.convs.{1..3}.0.body.{0,1} (separable)       aspp.branches.{1..3}.conv.{depthwise,pointwise}
classifier.aspp.convs.4.{1,2}  (index 0 is the avg pool)    aspp.pool.{conv,bn}
classifier.aspp.project.{0,1}                               aspp.project.{conv,bn}
classifier.classifier.{0,1}                                 decoder.0.{conv,bn}
classifier.classifier.0.body.{0,1} (separable)              decoder.0.conv.{depthwise,pointwise}
classifier.classifier.3                                     classifier
==========================================================  =========================================

:func:`vainf_state_shapes` lists every key and shape VainF's code creates (derived from
``network/modeling.py``, ``network/_deeplab.py`` and ``network/backbone/{mobilenetv2,resnet}.py``),
so a conversion is checked for completeness, not only for names that happen to match.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vpcli.errors import DataFormatError, InputError, UsageError

__all__ = [
    "VAINF_ARCHS",
    "convert_deeplab_vainf",
    "convert_vainf_file",
    "load_vainf_checkpoint",
    "vainf_config",
    "vainf_key_to_ours",
    "vainf_state_shapes",
]

# VainF model name -> our backbone name.
VAINF_ARCHS = {"deeplabv3plus_mobilenet": "mobilenetv2", "deeplabv3plus_resnet50": "resnet50",
               "deeplabv3plus_resnet101": "resnet101"}
_MNV2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1))
_RESNET_LAYERS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _check_arch(arch: str) -> str:
    if arch not in VAINF_ARCHS:
        raise UsageError(f"unknown VainF architecture {arch!r}", f"use one of {', '.join(VAINF_ARCHS)}")
    return VAINF_ARCHS[arch]


def vainf_config(arch: str, *, num_classes: int = 19, output_stride: int = 16, separable: bool = False,
                 input_size: tuple[int, int] | None = None):
    """The :class:`~vpcli.preprocess.deeplab.DeepLabConfig` that VainF's ``arch`` corresponds to."""
    from vpcli.io.labels import CITYSCAPES_CLASSES
    from vpcli.preprocess.deeplab import DeepLabConfig
    return DeepLabConfig(backbone=_check_arch(arch), num_classes=num_classes, output_stride=output_stride,
                         separable=separable, input_size=input_size,
                         classes=CITYSCAPES_CLASSES if num_classes == 19 else None)


# ------------------------------------------------------------------------------ their layout

def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (() if k == "num_batches_tracked" else (c,)) for k in _BN}


def _conv3(prefix: str, cin: int, cout: int, separable: bool) -> dict[str, tuple[int, ...]]:
    """A 3x3 head conv, or VainF's AtrousSeparableConvolution (``body.0`` depthwise, ``body.1`` pointwise)."""
    if separable:
        return {f"{prefix}.body.0.weight": (cin, 1, 3, 3), f"{prefix}.body.1.weight": (cout, cin, 1, 1)}
    return {f"{prefix}.weight": (cout, cin, 3, 3)}


def vainf_state_shapes(arch: str, *, num_classes: int = 19, separable: bool = False) -> dict[str, tuple[int, ...]]:
    """Every key of VainF's ``model.state_dict()`` for ``arch`` with its shape, in their order."""
    backbone = _check_arch(arch)
    s: dict[str, tuple[int, ...]] = {}
    if backbone == "mobilenetv2":
        # features[0] = ConvBNReLU(3, 32, stride 2); features[1..17] inverted residuals;
        # low_level_features = features[0:4], high_level_features = features[4:-1] (keys keep indices).
        s["backbone.low_level_features.0.0.weight"] = (32, 3, 3, 3)
        s.update(_bn("backbone.low_level_features.0.1", 32))
        cin, j = 32, 1
        for t, c, n, _ in _MNV2_SETTING:
            for _ in range(n):
                p = f"backbone.{'low' if j <= 3 else 'high'}_level_features.{j}.conv"
                hidden = int(round(cin * t))
                if t == 1:
                    s[f"{p}.0.0.weight"] = (hidden, 1, 3, 3)
                    s.update(_bn(f"{p}.0.1", hidden))
                    s[f"{p}.1.weight"] = (c, hidden, 1, 1)
                    s.update(_bn(f"{p}.2", c))
                else:
                    s[f"{p}.0.0.weight"] = (hidden, cin, 1, 1)
                    s.update(_bn(f"{p}.0.1", hidden))
                    s[f"{p}.1.0.weight"] = (hidden, 1, 3, 3)
                    s.update(_bn(f"{p}.1.1", hidden))
                    s[f"{p}.2.weight"] = (c, hidden, 1, 1)
                    s.update(_bn(f"{p}.3", c))
                cin, j = c, j + 1
        high, low = 320, 24
    else:
        s["backbone.conv1.weight"] = (64, 3, 7, 7)
        s.update(_bn("backbone.bn1", 64))
        cin = 64
        for li, (planes, blocks) in enumerate(zip((64, 128, 256, 512), _RESNET_LAYERS[backbone]), 1):
            for b in range(blocks):
                p = f"backbone.layer{li}.{b}"
                s[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
                s.update(_bn(f"{p}.bn1", planes))
                s[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                s.update(_bn(f"{p}.bn2", planes))
                s[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                s.update(_bn(f"{p}.bn3", planes * 4))
                if b == 0:  # stride 2 or 64 != 256 channels: a projection shortcut
                    s[f"{p}.downsample.0.weight"] = (planes * 4, cin, 1, 1)
                    s.update(_bn(f"{p}.downsample.1", planes * 4))
                cin = planes * 4
        high, low = 2048, 256
    # DeepLabHeadV3Plus: project (low-level), aspp, classifier.
    s["classifier.project.0.weight"] = (48, low, 1, 1)
    s.update(_bn("classifier.project.1", 48))
    s["classifier.aspp.convs.0.0.weight"] = (256, high, 1, 1)
    s.update(_bn("classifier.aspp.convs.0.1", 256))
    for i in (1, 2, 3):
        s.update(_conv3(f"classifier.aspp.convs.{i}.0", high, 256, separable))
        s.update(_bn(f"classifier.aspp.convs.{i}.1", 256))
    s["classifier.aspp.convs.4.1.weight"] = (256, high, 1, 1)
    s.update(_bn("classifier.aspp.convs.4.2", 256))
    s["classifier.aspp.project.0.weight"] = (256, 5 * 256, 1, 1)
    s.update(_bn("classifier.aspp.project.1", 256))
    s.update(_conv3("classifier.classifier.0", 304, 256, separable))
    s.update(_bn("classifier.classifier.1", 256))
    s["classifier.classifier.3.weight"] = (num_classes, 256, 1, 1)
    s["classifier.classifier.3.bias"] = (num_classes,)
    return s


# ------------------------------------------------------------------------------ the mapping

_SEP = {"body.0": "depthwise", "body.1": "pointwise"}
_HEAD_RULES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(a), b) for a, b in (
    (r"^classifier\.project\.0\.(.+)$", r"low_proj.conv.\1"),
    (r"^classifier\.project\.1\.(.+)$", r"low_proj.bn.\1"),
    (r"^classifier\.aspp\.convs\.([0-3])\.0\.body\.0\.(.+)$", r"aspp.branches.\1.conv.depthwise.\2"),
    (r"^classifier\.aspp\.convs\.([0-3])\.0\.body\.1\.(.+)$", r"aspp.branches.\1.conv.pointwise.\2"),
    (r"^classifier\.aspp\.convs\.([0-3])\.0\.(weight|bias)$", r"aspp.branches.\1.conv.\2"),
    (r"^classifier\.aspp\.convs\.([0-3])\.1\.(.+)$", r"aspp.branches.\1.bn.\2"),
    (r"^classifier\.aspp\.convs\.4\.1\.(.+)$", r"aspp.pool.conv.\1"),
    (r"^classifier\.aspp\.convs\.4\.2\.(.+)$", r"aspp.pool.bn.\1"),
    (r"^classifier\.aspp\.project\.0\.(.+)$", r"aspp.project.conv.\1"),
    (r"^classifier\.aspp\.project\.1\.(.+)$", r"aspp.project.bn.\1"),
    (r"^classifier\.classifier\.0\.body\.0\.(.+)$", r"decoder.0.conv.depthwise.\1"),
    (r"^classifier\.classifier\.0\.body\.1\.(.+)$", r"decoder.0.conv.pointwise.\1"),
    (r"^classifier\.classifier\.0\.(weight|bias)$", r"decoder.0.conv.\1"),
    (r"^classifier\.classifier\.1\.(.+)$", r"decoder.0.bn.\1"),
    (r"^classifier\.classifier\.3\.(weight|bias)$", r"classifier.\1"),
))
_MNV2_BLOCK = re.compile(r"^backbone\.(low|high)_level_features\.(\d+)\.conv\.(.+)$")
# Inside an inverted residual: (expansion? , VainF sub-path) -> ours.
_MNV2_T1 = {"0.0": "depthwise.conv", "0.1": "depthwise.bn", "1": "project.conv", "2": "project.bn"}
_MNV2_T6 = {"0.0": "expand.conv", "0.1": "expand.bn", "1.0": "depthwise.conv", "1.1": "depthwise.bn",
            "2": "project.conv", "3": "project.bn"}


def vainf_key_to_ours(key: str, arch: str) -> str | None:
    """Our parameter name for one of VainF's, or None when ``key`` is not part of ``arch``."""
    backbone = _check_arch(arch)
    if key.startswith("classifier."):
        for pattern, repl in _HEAD_RULES:
            if pattern.match(key):
                return pattern.sub(repl, key)
        return None
    if backbone != "mobilenetv2":
        ok = re.match(r"^backbone\.(conv1|bn1|layer[1-4])\.", key)
        return key if ok else None
    m = re.match(r"^backbone\.low_level_features\.0\.([01])\.(.+)$", key)
    if m:
        return f"backbone.stem.{'conv' if m[1] == '0' else 'bn'}.{m[2]}"
    m = _MNV2_BLOCK.match(key)
    if not m:
        return None
    part, j, rest = m[1], int(m[2]), m[3]
    if j < 1 or j > 17 or (part == "low") != (j <= 3):
        return None
    table = _MNV2_T1 if j == 1 else _MNV2_T6
    for sub in sorted(table, key=len, reverse=True):  # "0.0" before "0"
        if rest.startswith(sub + "."):
            return f"backbone.blocks.{j - 1}.{table[sub]}.{rest[len(sub) + 1:]}"
    return None


# ------------------------------------------------------------------------------ loading

def load_vainf_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``model_state`` of a VainF ``.pth`` (or a bare state dict), read without unpickling code."""
    import numpy as np
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist", "download it first (see the manifest entry's source)")
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    # best_score is a numpy float64: allow exactly the globals that rebuild numpy scalars, under the
    # numpy 1.x and 2.x module names the pickle may use.
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
               np.dtype, *(type(np.dtype(t)) for t in ("float64", "float32", "int64"))]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle/zip errors come in many types
        raise DataFormatError(f"cannot read {path} as a PyTorch checkpoint: {str(e).splitlines()[0]}",
                              "pass VainF's .pth file as downloaded (it must load with weights_only=True)") from None
    state = obj.get("model_state", obj) if isinstance(obj, dict) else None
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise DataFormatError(f"{path} holds no state dict (expected a dict with 'model_state')",
                              "pass a checkpoint written by VainF/DeepLabV3Plus-Pytorch main.py")
    return dict(state)


def convert_deeplab_vainf(state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike, arch: str, *,
                          num_classes: int | None = None) -> dict[str, torch.Tensor]:
    """VainF's state dict (or checkpoint path) for ``arch`` -> a state dict for :class:`DeepLabV3Plus`.

    Every key must map and every key VainF's model has must be present with its shape (from
    :func:`vainf_state_shapes`); ``num_classes`` defaults to the classifier's row count. A
    ``module.`` prefix (DataParallel) is stripped. Separable-conv checkpoints (``--separable_conv``)
    are recognised by their ``body.0`` keys. Build the model with
    ``vainf_config(arch, num_classes=..., separable=...)``.
    """
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        state = load_vainf_checkpoint(state_dict_or_path)
    else:
        state = dict(state_dict_or_path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "classifier.classifier.3.weight" not in state:
        raise DataFormatError(f"not a VainF DeepLabV3+ state dict for {arch}: no classifier.classifier.3.weight",
                              "pass the 'model_state' of a deeplabv3plus_* checkpoint")
    k_found = int(state["classifier.classifier.3.weight"].shape[0])
    if num_classes is not None and num_classes != k_found:
        raise DataFormatError(f"the checkpoint has {k_found} classes, {num_classes} were asked for",
                              "Cityscapes checkpoints have 19 classes, Pascal VOC ones 21")
    separable = any(".body.0." in k for k in state)
    expected = vainf_state_shapes(arch, num_classes=k_found, separable=separable)
    unknown = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})" for k in expected
             if k in state and tuple(state[k].shape) != expected[k]]
    if unknown or missing or wrong:
        detail = "; ".join(f"{what}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                           for what, items in (("unexpected", unknown), ("missing", missing), ("shape", wrong)) if items)
        raise DataFormatError(f"state dict does not match VainF's {arch} ({detail})",
                              f"check the architecture: one of {', '.join(VAINF_ARCHS)}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        ours = vainf_key_to_ours(key, arch)
        if ours is None or ours in out:  # cannot happen for a key of `expected`; guards the tables
            raise AssertionError(f"no unique mapping for {key!r}")
        out[ours] = value
    return out


def convert_vainf(src: Mapping[str, torch.Tensor] | str | os.PathLike, arch: str, *,
                  num_classes: int | None = None, output_stride: int = 16,
                  input_size: tuple[int, int] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A VainF checkpoint (or state dict) -> (our state dict, the matching DeepLabConfig as a dict).

    The class count and separable convs are read from the tensors; ``num_classes``, when given,
    must agree with them.
    """
    state = convert_deeplab_vainf(src, arch, num_classes=num_classes)
    separable = any(".depthwise." in k for k in state if not k.startswith("backbone."))
    cfg = vainf_config(arch, num_classes=int(state["classifier.weight"].shape[0]), output_stride=output_stride,
                       separable=separable, input_size=input_size).to_dict()
    return state, cfg


def convert_vainf_file(src: str | os.PathLike, dst: str | os.PathLike, arch: str, *,
                       output_stride: int = 16, input_size: tuple[int, int] | None = None,
                       fp16: bool = False) -> dict[str, Any]:
    """Convert a VainF checkpoint to ``dst`` (safetensors) plus ``<stem>.config.json``; return the config.

    `vpcli weights convert --from deeplab-vainf` does the same and writes a manifest entry instead
    of the sidecar (the config is in the file's metadata either way).
    """
    from safetensors.torch import save_file

    from vpcli.io.atomic import atomic_path, write_text
    state, cfg = convert_vainf(src, arch, output_stride=output_stride, input_size=input_size)
    tensors = {k: (v.half() if fp16 and v.is_floating_point() else v).contiguous() for k, v in state.items()}
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        save_file(tensors, str(tmp), metadata={"vpcli_arch": "deeplabv3plus", "vpcli_config": json.dumps(cfg),
                                               "converted_from": f"VainF/DeepLabV3Plus-Pytorch {arch}"})
    write_text(dst.parent / f"{dst.stem}.config.json", json.dumps({"arch": "deeplabv3plus", **cfg}, indent=2) + "\n")
    return cfg
