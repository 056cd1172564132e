"""AlexNet and VGG16 feature extractors in plain torch, laid out like torchvision's.

The module trees reproduce ``torchvision.models.alexnet()`` and ``torchvision.models.vgg16()``
(no batch norm) index for index, so their state-dict keys are the same — ``features.0.weight``,
``features.3.bias``, ..., ``classifier.6.weight`` — and a torchvision checkpoint
(``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``) loads one-to-one with
:func:`convert_torchvision_state_dict`. torchvision itself is not needed.

The metrics only use ``features``; the ``classifier`` (AlexNet 57M, VGG16 120M parameters) is
built only with ``include_classifier=True``, and the converter drops its keys otherwise.

``forward(x, taps)`` runs ``features`` up to the last requested index and returns the outputs of
the modules at the ``taps`` indices (e.g. the ReLUs that LPIPS reads).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vpcli.errors import WeightsError

# torchvision/models/vgg.py, cfgs["D"]: channel counts, "M" = 2x2 max pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class _TappedFeatures(nn.Module):
    """Base: a ``features`` Sequential whose intermediate outputs can be read by index."""

    features: nn.Sequential

    def forward(self, x: torch.Tensor, taps: Sequence[int] | None = None) -> list[torch.Tensor]:
        if taps is None:
            return [self.features(x)]
        wanted = set(taps)
        last = max(wanted)
        if last >= len(self.features) or min(wanted) < 0:
            raise IndexError(f"tap indices must be in 0..{len(self.features) - 1}, got {sorted(wanted)}")
        outs = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                outs[i] = x
            if i == last:
                break
        return [outs[i] for i in taps]


class AlexNet(_TappedFeatures):
    """torchvision's AlexNet (the "one weird trick" variant, 64-192-384-256-256 channels)."""

    # Outputs of the five ReLUs after conv1..conv5: what LPIPS compares.
    RELU_TAPS = (1, 4, 7, 9, 11)
    RELU_CHANNELS = (64, 192, 384, 256, 256)

    def __init__(self, *, include_classifier: bool = False, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),      # 0, 1
            nn.MaxPool2d(kernel_size=3, stride=2),                                  # 2
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),               # 3, 4
            nn.MaxPool2d(kernel_size=3, stride=2),                                  # 5
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),              # 6, 7
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),              # 8, 9
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),              # 10, 11
            nn.MaxPool2d(kernel_size=3, stride=2),                                  # 12
        )
        self.include_classifier = include_classifier
        if include_classifier:
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),
                nn.Dropout(p=0.5), nn.Linear(4096, 4096), nn.ReLU(),
                nn.Linear(4096, num_classes),
            )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if not self.include_classifier:
            raise RuntimeError("built without the classifier; pass include_classifier=True")
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class VGG16(_TappedFeatures):
    """torchvision's VGG16 (configuration D, no batch norm)."""

    # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: the last ReLU of each block.
    BLOCK_RELU_TAPS = (3, 8, 15, 22, 29)
    BLOCK_RELU_CHANNELS = (64, 128, 256, 512, 512)
    # Every ReLU (after each of the 13 convolutions) and every max pool.
    ALL_RELU_TAPS = (1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29)
    POOL_TAPS = (4, 9, 16, 23, 30)

    def __init__(self, *, include_classifier: bool = False, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU()]
                in_ch = v
        self.features = nn.Sequential(*layers)
        self.include_classifier = include_classifier
        if include_classifier:
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(p=0.5),
                nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=0.5),
                nn.Linear(4096, num_classes),
            )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if not self.include_classifier:
            raise RuntimeError("built without the classifier; pass include_classifier=True")
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


ARCHS = {"alexnet": AlexNet, "vgg16": VGG16}


def build_backbone(arch: str, *, include_classifier: bool = False) -> AlexNet | VGG16:
    try:
        cls = ARCHS[arch]
    except KeyError:
        raise ValueError(f"unknown backbone {arch!r}; expected one of {sorted(ARCHS)}") from None
    return cls(include_classifier=include_classifier)


def convert_torchvision_state_dict(state: dict[str, torch.Tensor], arch: str, *, include_classifier: bool = False,
                                   prefix: str = "") -> dict[str, torch.Tensor]:
    """Map a torchvision ``alexnet``/``vgg16`` state dict onto ours (same keys), checking every shape.

    ``classifier.*`` keys are dropped unless ``include_classifier``; ``prefix`` is prepended to
    every output key (e.g. ``"net."`` for the LPIPS module). Raises :class:`WeightsError` when a
    key is missing or a shape differs (a wrong architecture or a truncated file).
    """
    reference = build_backbone(arch, include_classifier=include_classifier).state_dict()
    # torchvision checkpoints saved from DataParallel carry a "module." prefix.
    state = {k.removeprefix("module."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    for key, ref in reference.items():
        if key not in state:
            raise WeightsError(f"{arch} weights lack {key!r} ({len(state)} keys found)",
                               f"expected a torchvision {arch} state dict (e.g. from download.pytorch.org/models)")
        value = state[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise WeightsError(f"{arch} weights: {key!r} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}",
                               f"expected a torchvision {arch} state dict")
        out[prefix + key] = value.detach().to(torch.float32).contiguous()
    unexpected = [k for k in state if k not in reference and not k.startswith("classifier.")]
    if unexpected:
        raise WeightsError(f"{arch} weights hold unexpected keys: {', '.join(unexpected[:5])}",
                           f"expected a torchvision {arch} state dict (batch-norm variants are not supported)")
    return out
