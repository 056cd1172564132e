"""DeepLabV3+ (Chen et al., ECCV 2018) for semantic segmentation, in plain torch.

    image (B,3,H,W) in [0,1] -> normalise -> backbone -> low (stride 4), high (stride OS)
    high -> ASPP: 1x1 | 3x3 rate r1 | r2 | r3 | image pooling -> concat -> 1x1 -> dropout
    low  -> 1x1 projection to 48 channels
    concat(low, upsample(ASPP)) -> decoder 3x3 conv(s) -> 1x1 classifier -> upsample to (H, W)

Rates are 6/12/18 at output stride 16 and doubled (12/24/36) at output stride 8 (paper, Sec. 3).
With ``separable=True`` the 3x3 convs of ASPP and decoder are atrous separable convs (depthwise
then pointwise) as in the paper; ``separable=False`` uses plain convs, which is how the public
VainF/DeepLabV3Plus-Pytorch checkpoints were trained ("All pre-trained models in this repo were
trained without atrous separable convolution"). The decoder has ``decoder_convs`` 3x3 convs:
the paper uses two, VainF one (the default, so its checkpoints load).

Upsampling is bilinear with ``align_corners=False`` everywhere (VainF). Parameter names are our
own; :mod:`vpcli.weights.convert_deeplab` maps VainF's names onto them one-to-one.

The model is a :class:`~vpcli.trainable.Trainable` (the small training contract shared with the
predictors), so that :class:`vpcli.engine.trainer.Trainer` trains it: its one step's loss is the
pixel-wise cross-entropy (ignore index 255), ``model(images)`` returns logits, and the best
checkpoint is chosen by validation mIoU.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vpcli.errors import ConfigError
from vpcli.nn.backbones_seg import BACKBONES, ConvBNAct, build_backbone, init_weights
from vpcli.trainable import Batch, Losses, Trainable, TrainState
from vpcli.registry import register

__all__ = ["ASPP", "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "DeepLabConfig", "DeepLabV3Plus"]

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DeepLabConfig:
    """What a DeepLabV3+ checkpoint needs to be rebuilt (stored next to its weights).

    ``input_size`` is the (H, W) the model was trained or evaluated at: inference shrinks larger
    frames to fit inside it. ``classes`` / ``palette`` declare the label set; when absent a
    19-class model uses the Cityscapes train ids and colours.
    """

    backbone: str = "mobilenetv2"
    num_classes: int = 19
    output_stride: int = 16
    width_mult: float = 1.0                      # MobileNetV2 only
    aspp_channels: int = 256
    atrous_rates: tuple[int, int, int] | None = None   # None: (6, 12, 18) at OS 16, doubled at OS 8
    low_level_channels: int = 48
    decoder_channels: int = 256
    decoder_convs: int = 1
    separable: bool = False
    dropout: float = 0.1
    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    classes: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self):
        def bad(field: str, want: str):
            raise ConfigError(f"deeplab config: {field} must be {want}, got {getattr(self, field)!r}",
                              f"fix '{field}' in the weights' config")

        if self.backbone not in BACKBONES:
            bad("backbone", f"one of {', '.join(BACKBONES)}")
        if self.output_stride not in (8, 16):
            bad("output_stride", "8 or 16")
        for name in ("num_classes", "aspp_channels", "low_level_channels", "decoder_channels", "decoder_convs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(name, "a positive integer")
        if self.num_classes > IGNORE_INDEX:
            bad("num_classes", f"at most {IGNORE_INDEX} (id 255 means 'ignore')")
        if not 0 < float(self.width_mult) <= 4:
            bad("width_mult", "in (0, 4]")
        if not 0 <= float(self.dropout) < 1:
            bad("dropout", "in [0, 1)")
        if self.atrous_rates is None:
            self.atrous_rates = (6, 12, 18) if self.output_stride == 16 else (12, 24, 36)
        self.atrous_rates = tuple(int(r) for r in self.atrous_rates)
        if len(self.atrous_rates) != 3 or min(self.atrous_rates) < 1:
            bad("atrous_rates", "three positive integers")
        if self.input_size is not None:
            self.input_size = tuple(int(v) for v in self.input_size)
            if len(self.input_size) != 2 or min(self.input_size) < 8:
                bad("input_size", "(height, width), each >= 8")
        self.mean, self.std = tuple(map(float, self.mean)), tuple(map(float, self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            bad("mean", "three numbers (and std three positive numbers)")
        if self.classes is not None:
            self.classes = tuple(str(c) for c in self.classes)
            if len(self.classes) != self.num_classes:
                raise ConfigError(f"deeplab config: {len(self.classes)} class names for num_classes="
                                  f"{self.num_classes}", "give one name per class")
        if self.palette is not None:
            pal = np.asarray(self.palette)
            if pal.shape != (self.num_classes, 3) or pal.min() < 0 or pal.max() > 255:
                raise ConfigError(f"deeplab config: palette must be {self.num_classes} RGB triples in 0..255, "
                                  f"got shape {pal.shape}", "give one colour per class")
            self.palette = tuple(tuple(int(c) for c in row) for row in pal)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeepLabConfig:
        """Build from a mapping (manifest, config.json); unknown keys are an error naming the closest."""
        from vpcli.config import from_dict
        data = {k: v for k, v in dict(data).items() if k != "arch"}  # a config file may name its arch
        return from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples -> lists, JSON/YAML-safe


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: four conv branches and an image-level pooling branch."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, int, int], *, separable: bool, dropout: float):
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNAct(cin, cout, 1)]
            + [ConvBNAct(cin, cout, 3, padding=r, dilation=r, separable=separable) for r in rates])
        self.pool = ConvBNAct(cin, cout, 1)  # applied to the global average (image pooling)
        self.project = ConvBNAct(5 * cout, cout, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        outs = [b(x) for b in self.branches]  # 4 x (B, cout, h, w)
        pooled = self.pool(F.adaptive_avg_pool2d(x, 1))  # (B, cout, 1, 1)
        outs.append(F.interpolate(pooled, size=(h, w), mode="bilinear", align_corners=False))
        return self.dropout(self.project(torch.cat(outs, 1)))  # (B, 5*cout, h, w) -> (B, cout, h, w)


@register("segmenter", "deeplabv3plus", config_cls=DeepLabConfig,
          description="DeepLabV3+ (MobileNetV2 / ResNet-50 / ResNet-101 backbone)")
class DeepLabV3Plus(Trainable):
    name = "deeplabv3plus"
    validation_metric = ("miou", "max")

    def __init__(self, config: DeepLabConfig | dict[str, Any] | None = None, **overrides: Any):
        if config is None or isinstance(config, dict):
            config = DeepLabConfig.from_dict({**(config or {}), **overrides})
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        super().__init__(config)
        c = config
        self.backbone = build_backbone(c.backbone, output_stride=c.output_stride, width_mult=c.width_mult)
        low_ch, high_ch = self.backbone.low_channels, self.backbone.out_channels
        self.low_proj = ConvBNAct(low_ch, c.low_level_channels, 1)
        self.aspp = ASPP(high_ch, c.aspp_channels, c.atrous_rates, separable=c.separable, dropout=c.dropout)
        dec_in = c.low_level_channels + c.aspp_channels
        self.decoder = nn.Sequential(*[
            ConvBNAct(dec_in if i == 0 else c.decoder_channels, c.decoder_channels, 3, padding=1,
                      separable=c.separable) for i in range(c.decoder_convs)])
        self.classifier = nn.Conv2d(c.decoder_channels, c.num_classes, 1)
        # Not in the state dict: they come from the config, and converted checkpoints lack them.
        self.register_buffer("mean", torch.tensor(c.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(c.std).view(1, 3, 1, 1), persistent=False)
        init_weights(self)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    # --- inference --------------------------------------------------------------------------
    def logits(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` RGB in [0, 1] -> class scores ``(B, K, H, W)``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        size = images.shape[-2:]
        x = (images - self.mean) / self.std
        low, high = self.backbone(x)  # (B, C_low, H/4, W/4), (B, C_high, H/OS, W/OS)
        low = self.low_proj(low)
        high = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False)
        out = self.classifier(self.decoder(torch.cat([low, high], 1)))  # (B, K, H/4, W/4)
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict_labels(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> class ids ``int64 (B, H, W)``."""
        return self.logits(images).argmax(1)

    def forward(self, x: Tensor | Batch, step: str = "model", state: TrainState | None = None):
        """Logits for an image tensor; the training losses for a batch dict (Trainable contract)."""
        if isinstance(x, dict):
            return super().forward(x, step, state)
        return self.logits(x)

    # --- training ----------------------------------------------------------------------------
    @staticmethod
    def _flatten(batch: Batch) -> tuple[Tensor, Tensor]:
        """``rgb`` (B,T,3,H,W) or (B,3,H,W) and ``labels`` (B,T,H,W) or (B,H,W) -> frames as one batch."""
        rgb, labels = batch["rgb"], batch["labels"]
        if rgb.dim() == 5:
            rgb = rgb.flatten(0, 1)  # (B*T, 3, H, W)
            labels = labels.flatten(0, 1)  # (B*T, H, W)
        return rgb, labels.long()

    def loss(self, batch: Batch, state: TrainState) -> Losses:
        rgb, labels = self._flatten(batch)
        ce = F.cross_entropy(self.logits(rgb), labels, ignore_index=IGNORE_INDEX)
        return {"loss": ce}

    @torch.no_grad()
    def validate(self, batch: Batch, state: TrainState) -> dict[str, float]:
        from vpcli.metrics.segmentation import miou
        rgb, labels = self._flatten(batch)
        logits = self.logits(rgb)
        pred = logits.argmax(1)
        valid = labels != IGNORE_INDEX
        acc = (pred[valid] == labels[valid]).float().mean() if valid.any() else torch.tensor(float("nan"))
        frame_miou = miou(pred[:, None], labels[:, None], self.num_classes)  # (B*T, 1)
        return {"loss": float(F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)),
                "pixel_acc": float(acc), "miou": float(frame_miou.nanmean())}

