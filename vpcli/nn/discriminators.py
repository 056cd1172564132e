"""Patch discriminators and their losses, shared by the adversarial methods (HVP, SADM).

PatchGAN (Isola et al. 2017, as in pix2pixHD / vid2vid / CycleGAN): strided 4x4 convolutions,
LeakyReLU 0.2, instance normalisation after the first layer, a 1-channel map of patch logits.
``forward`` returns every intermediate map and the logits last, for feature matching.
Losses: LSGAN (Mao et al. 2017; targets 1 real, 0 fake) and feature matching (pix2pixHD: L1
between the discriminator's features of fake and real inputs).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _Patch(nn.Module):
    """Strided convs (width doubling per layer up to 8x), LeakyReLU 0.2, instance norm after the
    first layer, a 1-channel logit map; ``forward`` returns every map, the logits last."""

    def __init__(self, cin: int, width: int, layers: int, conv, norm, kernel, stride, pad):
        super().__init__()
        blocks, c = [], cin
        for i in range(layers):
            out = width * 2 ** min(i, 3)
            blocks.append(nn.Sequential(conv(c, out, kernel, stride, pad), *([norm(out, affine=True)] if i else []),
                                        nn.LeakyReLU(0.2, inplace=True)))
            c = out
        blocks.append(conv(c, 1, 3, 1, 1))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for b in self.blocks:
            x = b(x)
            feats.append(x)
        return feats


class PatchDiscriminator(_Patch):
    """2D PatchGAN over ``(N, cin, H, W)``: 4x4 stride-2 convs."""

    def __init__(self, cin: int, width: int, layers: int):
        super().__init__(cin, width, layers, nn.Conv2d, nn.InstanceNorm2d, 4, 2, 1)


class PatchDiscriminator3d(_Patch):
    """3D PatchGAN over clips ``(N, cin, T, H, W)`` (SADM's video discriminator: CycleGAN's with
    3D convolutions): kernels 3x4x4, strides 2 in space and 1 in time."""

    def __init__(self, cin: int, width: int, layers: int):
        super().__init__(cin, width, layers, nn.Conv3d, nn.InstanceNorm3d, (3, 4, 4), (1, 2, 2), (1, 1, 1))


def lsgan(feats: list[torch.Tensor], real: bool) -> torch.Tensor:
    """LSGAN loss of a discriminator's output (the last map): mean (D - target)^2."""
    return ((feats[-1] - (1.0 if real else 0.0)) ** 2).mean()


def feature_matching(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 between intermediate maps of fake and (detached) real inputs."""
    return sum(F.l1_loss(f, r.detach()) for f, r in zip(fake[:-1], real[:-1])) / max(len(fake) - 1, 1)
