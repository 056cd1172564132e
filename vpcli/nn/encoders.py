"""Frame encoders and decoders of SVG-family predictors, with skip connections.

* DCGAN-64 (Radford et al. 2016) and VGG-64 (Simonyan & Zisserman 2015) as SVG (Denton & Fergus
  2018) and SLAMP (App. C.2) use them: a 64x64 frame -> a ``dim`` vector (tanh) plus four skip
  maps at 32, 16, 8 and 4 pixels; the decoder mirrors it, concatenating the skips.
* The street-scene encoder/decoder of SLAMP's KITTI (92x310) and Cityscapes (128x256) models
  (App. C: "a shared encoder to downsample the image first", VGG-like, deeper): a frame -> a
  ``dim``-channel map (4x4 KITTI, 4x8 Cityscapes) plus five skip maps; and the small
  :class:`SpatialEncoder` that SLAMP stacks on it for appearance and motion.

Layer sizes, order and parameter names follow kaanakan/slamp ``models/dcgan_64.py``,
``models/vgg_64.py``, ``models/kitti_models.py`` and ``models/cityscapes_models.py``; their wrapper
modules (``.main`` / ``.layers``) are plain ``nn.Sequential`` here, so a checkpoint key maps to
ours by dropping that one path segment (``vpcli.weights.convert_slamp``). ``nf`` scales every
width (64 = the published models; smaller for tests and CPU smoke runs).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from vpcli.nn.se import SqueezeExcitation


def conv_bn_lrelu(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Sequential:
    """Conv (no bias: BN follows) -> BatchNorm -> LeakyReLU(0.2): ``vgg_layer``, ``dcgan_conv``, ``conv``."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


def upconv_bn_lrelu(cin: int, cout: int, kernel: int = 4, stride: int = 2, padding: int = 1) -> nn.Sequential:
    """Transposed conv -> BatchNorm -> LeakyReLU(0.2): ``dcgan_upconv`` (x2 with the defaults)."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


def _head(*layers: nn.Module, sigmoid: bool) -> nn.Sequential:
    # Every decoder ends in a biased (transposed) conv to `nc` channels, then a sigmoid for
    # images or nothing for flow (the reference's `act=None`); parameter indices are the same.
    return nn.Sequential(*layers, nn.Sigmoid()) if sigmoid else nn.Sequential(*layers)


def _check_64(x: torch.Tensor, name: str) -> None:
    if x.shape[-2:] != (64, 64):
        raise ValueError(f"the {name} encoder takes 64x64 frames, got {tuple(x.shape[-2:])}")


class DCGAN64Encoder(nn.Module):
    def __init__(self, dim: int, nc: int = 1, nf: int = 64):
        super().__init__()
        self.dim = dim
        self.c1 = conv_bn_lrelu(nc, nf, 4, 2, 1)              # 64 -> 32
        self.c2 = conv_bn_lrelu(nf, nf * 2, 4, 2, 1)          # 32 -> 16
        self.c3 = conv_bn_lrelu(nf * 2, nf * 4, 4, 2, 1)      # 16 -> 8
        self.c4 = conv_bn_lrelu(nf * 4, nf * 8, 4, 2, 1)      # 8 -> 4
        self.c5 = nn.Sequential(nn.Conv2d(nf * 8, dim, 4, 1, 0, bias=False), nn.BatchNorm2d(dim), nn.Tanh())  # 4 -> 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        _check_64(x, "DCGAN-64")
        h1 = self.c1(x)
        h2 = self.c2(h1)
        h3 = self.c3(h2)
        h4 = self.c4(h3)
        return self.c5(h4).flatten(1), [h1, h2, h3, h4]  # (B, dim, 1, 1) -> (B, dim)


class DCGAN64Decoder(nn.Module):
    def __init__(self, dim: int, nc: int = 1, nf: int = 64, sigmoid: bool = True):
        super().__init__()
        self.dim = dim
        self.upc1 = upconv_bn_lrelu(dim, nf * 8, 4, 1, 0)     # 1 -> 4
        self.upc2 = upconv_bn_lrelu(nf * 8 * 2, nf * 4)       # 4 -> 8 (input: features + skip)
        self.upc3 = upconv_bn_lrelu(nf * 4 * 2, nf * 2)       # 8 -> 16
        self.upc4 = upconv_bn_lrelu(nf * 2 * 2, nf)           # 16 -> 32
        self.upc5 = _head(nn.ConvTranspose2d(nf * 2, nc, 4, 2, 1), sigmoid=sigmoid)  # 32 -> 64

    def forward(self, vec: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        d1 = self.upc1(vec.view(-1, self.dim, 1, 1))          # (B, dim) -> (B, dim, 1, 1)
        d2 = self.upc2(torch.cat([d1, skips[3]], 1))
        d3 = self.upc3(torch.cat([d2, skips[2]], 1))
        d4 = self.upc4(torch.cat([d3, skips[1]], 1))
        return self.upc5(torch.cat([d4, skips[0]], 1))


class VGG64Encoder(nn.Module):
    def __init__(self, dim: int, nc: int = 1, nf: int = 64):
        super().__init__()
        self.dim = dim
        self.c1 = nn.Sequential(conv_bn_lrelu(nc, nf), conv_bn_lrelu(nf, nf))                       # 64
        self.c2 = nn.Sequential(conv_bn_lrelu(nf, nf * 2), conv_bn_lrelu(nf * 2, nf * 2))           # 32
        self.c3 = nn.Sequential(conv_bn_lrelu(nf * 2, nf * 4), conv_bn_lrelu(nf * 4, nf * 4),
                                conv_bn_lrelu(nf * 4, nf * 4))                                      # 16
        self.c4 = nn.Sequential(conv_bn_lrelu(nf * 4, nf * 8), conv_bn_lrelu(nf * 8, nf * 8),
                                conv_bn_lrelu(nf * 8, nf * 8))                                      # 8
        self.c5 = nn.Sequential(nn.Conv2d(nf * 8, dim, 4, 1, 0, bias=False), nn.BatchNorm2d(dim), nn.Tanh())  # 4 -> 1
        self.mp = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        _check_64(x, "VGG-64")
        h1 = self.c1(x)                 # (B, nf, 64, 64)
        h2 = self.c2(self.mp(h1))       # (B, 2nf, 32, 32)
        h3 = self.c3(self.mp(h2))       # (B, 4nf, 16, 16)
        h4 = self.c4(self.mp(h3))       # (B, 8nf, 8, 8)
        return self.c5(self.mp(h4)).flatten(1), [h1, h2, h3, h4]  # (B, dim, 1, 1) -> (B, dim)


class VGG64Decoder(nn.Module):
    def __init__(self, dim: int, nc: int = 1, nf: int = 64, sigmoid: bool = True):
        super().__init__()
        self.dim = dim
        self.upc1 = upconv_bn_lrelu(dim, nf * 8, 4, 1, 0)                                            # 1 -> 4
        self.upc2 = nn.Sequential(conv_bn_lrelu(nf * 16, nf * 8), conv_bn_lrelu(nf * 8, nf * 8),
                                  conv_bn_lrelu(nf * 8, nf * 4))                                     # 8
        self.upc3 = nn.Sequential(conv_bn_lrelu(nf * 8, nf * 4), conv_bn_lrelu(nf * 4, nf * 4),
                                  conv_bn_lrelu(nf * 4, nf * 2))                                     # 16
        self.upc4 = nn.Sequential(conv_bn_lrelu(nf * 4, nf * 2), conv_bn_lrelu(nf * 2, nf))         # 32
        # A 3x3 stride-1 *transposed* conv as the output layer, as in the reference (its weight is
        # stored (in, out, 3, 3), so it must stay a ConvTranspose2d for checkpoints to load).
        # The output layer is a 3x3 stride-1 *transposed* conv, as in the reference: its weight is
        # stored (in, out, 3, 3), so it stays a ConvTranspose2d for checkpoints to load.
        self.upc5 = _head(conv_bn_lrelu(nf * 2, nf), nn.ConvTranspose2d(nf, nc, 3, 1, 1), sigmoid=sigmoid)  # 64

    def forward(self, vec: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        def up(t: torch.Tensor) -> torch.Tensor:  # the reference's UpsamplingNearest2d(scale_factor=2)
            return F.interpolate(t, scale_factor=2, mode="nearest")
        d1 = self.upc1(vec.view(-1, self.dim, 1, 1))        # (B, dim) -> (B, dim, 1, 1) -> 4x4
        d2 = self.upc2(torch.cat([up(d1), skips[3]], 1))    # 8x8
        d3 = self.upc3(torch.cat([up(d2), skips[2]], 1))    # 16x16
        d4 = self.upc4(torch.cat([up(d3), skips[1]], 1))    # 32x32
        return self.upc5(torch.cat([up(d4), skips[0]], 1))  # 64x64


# --------------------------------------------------------------------------- street scenes

# Adaptive max-pool sizes after c1..c5 in the KITTI encoder (92x310 input); Cityscapes (128x256)
# uses plain stride-2 convolutions (c5 too) and no pooling. kaanakan/slamp models/kitti_models.py.
KITTI_POOLS = ((46, 156), (24, 80), (12, 40), (6, 20), (4, 4))


class StreetEncoder(nn.Module):
    """SLAMP's shared image encoder for KITTI / Cityscapes: ``dim`` channels at 1/32 (or 4x4) scale.

    ``pools``: adaptive max-pool sizes after c1..c5 (KITTI) or None (Cityscapes); ``c5_stride``
    2 for Cityscapes, 1 for KITTI (whose last pool does the down-sampling).
    """

    def __init__(self, dim: int, nc: int = 3, nf: int = 64, *, pools: tuple | None = None, c5_stride: int = 2):
        super().__init__()
        w = [nf, nf * 3 // 2, nf * 2, nf * 3, nf * 4]  # 64, 96, 128, 192, 256 for nf = 64
        self.c1 = nn.Sequential(conv_bn_lrelu(nc, w[0], stride=2), conv_bn_lrelu(w[0], w[0]))
        self.c2 = nn.Sequential(conv_bn_lrelu(w[0], w[1], stride=2), conv_bn_lrelu(w[1], w[1]))
        self.c3 = nn.Sequential(conv_bn_lrelu(w[1], w[2], stride=2), conv_bn_lrelu(w[2], w[2]), conv_bn_lrelu(w[2], w[2]))
        self.c4 = nn.Sequential(conv_bn_lrelu(w[2], w[3], stride=2), conv_bn_lrelu(w[3], w[3]), conv_bn_lrelu(w[3], w[3]))
        self.c5 = nn.Sequential(conv_bn_lrelu(w[3], w[4], stride=c5_stride), conv_bn_lrelu(w[4], w[4]),
                                conv_bn_lrelu(w[4], w[4]))
        self.c6 = nn.Sequential(conv_bn_lrelu(w[4], dim), conv_bn_lrelu(dim, dim))
        self.pools = tuple(pools) if pools is not None else None

    def _pool(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x if self.pools is None else F.adaptive_max_pool2d(x, self.pools[k])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h1 = self._pool(self.c1(x), 0)   # Cityscapes 128x256 -> 64x128; KITTI 92x310 -> 46x156
        h2 = self._pool(self.c2(h1), 1)  # 32x64 | 24x80
        h3 = self._pool(self.c3(h2), 2)  # 16x32 | 12x40
        h4 = self._pool(self.c4(h3), 3)  # 8x16  | 6x20
        h5 = self._pool(self.c5(h4), 4)  # 4x8   | 4x4
        return self.c6(h5), [h1, h2, h3, h4, h5]


class SpatialEncoder(nn.Module):
    """SLAMP's per-branch encoder on the shared features (``spatial_encoder``): same resolution,
    two SE layers, LeakyReLU output (no tanh)."""

    def __init__(self, dim: int, nc: int, nf: int = 64):
        super().__init__()
        self.c1 = nn.Sequential(conv_bn_lrelu(nc, nf * 4), conv_bn_lrelu(nf * 4, nf * 4), SqueezeExcitation(nf * 4))
        self.c2 = nn.Sequential(conv_bn_lrelu(nf * 4, nf * 4), conv_bn_lrelu(nf * 4, nf * 2), SqueezeExcitation(nf * 2))
        self.c3 = nn.Sequential(conv_bn_lrelu(nf * 2, nf), conv_bn_lrelu(nf, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(self.c2(self.c1(x)))


class StreetDecoder(nn.Module):
    """Mirror of :class:`StreetEncoder`: bilinear up-sampling (align_corners) to each skip's size,
    then to ``out_size``. The reference hard-codes those sizes for 92x310 / 128x256; taking them
    from the skips gives the same numbers there and works at other sizes too."""

    def __init__(self, dim: int, nc: int = 3, nf: int = 64, sigmoid: bool = True):
        super().__init__()
        w = [nf, nf * 3 // 2, nf * 2, nf * 3, nf * 4]  # 64, 96, 128, 192, 256
        self.upc1 = nn.Sequential(conv_bn_lrelu(dim, w[4]), conv_bn_lrelu(w[4], w[4]))
        self.upc2 = nn.Sequential(conv_bn_lrelu(w[4] * 2, w[4]), conv_bn_lrelu(w[4], w[4]), conv_bn_lrelu(w[4], w[3]))
        self.upc3 = nn.Sequential(conv_bn_lrelu(w[3] * 2, w[3]), conv_bn_lrelu(w[3], w[3]), conv_bn_lrelu(w[3], w[2]))
        self.upc4 = nn.Sequential(conv_bn_lrelu(w[2] * 2, w[2]), conv_bn_lrelu(w[2], w[1]))
        self.upc5 = nn.Sequential(conv_bn_lrelu(w[1] * 2, w[1]), conv_bn_lrelu(w[1], w[0]))
        self.upc6 = nn.Sequential(conv_bn_lrelu(w[0] * 2, w[0]), conv_bn_lrelu(w[0], w[0]))
        self.upc7 = _head(conv_bn_lrelu(w[0], w[0]), nn.ConvTranspose2d(w[0], nc, 3, 1, 1), sigmoid=sigmoid)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        def up(t: torch.Tensor, size) -> torch.Tensor:
            return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=True)
        d = self.upc1(x)                                           # at the latent size (4x8 | 4x4)
        d = self.upc2(torch.cat([d, skips[4]], 1))
        d = self.upc3(torch.cat([up(d, skips[3].shape[-2:]), skips[3]], 1))
        d = self.upc4(torch.cat([up(d, skips[2].shape[-2:]), skips[2]], 1))
        d = self.upc5(torch.cat([up(d, skips[1].shape[-2:]), skips[1]], 1))
        d = self.upc6(torch.cat([up(d, skips[0].shape[-2:]), skips[0]], 1))
        return self.upc7(up(d, out_size))
