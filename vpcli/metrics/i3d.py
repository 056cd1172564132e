"""Inception-I3D (Carreira & Zisserman, CVPR 2017), RGB stream, 400 Kinetics classes, in plain torch.

The architecture of DeepMind's ``kinetics-i3d`` (Sonnet) and of its widely used PyTorch port
(``piergiaj/pytorch-i3d``, ``pytorch_i3d.py``; StyleGAN-V and DIGAN evaluate FVD with a
TorchScript export of the same network):

- ``Unit3D`` = Conv3d without bias + BatchNorm3d (eps 1e-3) + ReLU, with TensorFlow 'SAME'
  padding computed from the input size (for an even input and stride 2 the extra pixel goes
  at the end, as in TF);
- stem Conv3d_1a_7x7 (stride 2) - MaxPool3d_2a (1x3x3, stride 1,2,2) - Conv3d_2b_1x1 -
  Conv3d_2c_3x3 - MaxPool3d_3a (1x3x3, stride 1,2,2); inception modules Mixed_3b, Mixed_3c -
  MaxPool3d_4a (3x3x3, stride 2) - Mixed_4b..Mixed_4f - MaxPool3d_5a (2x2x2, stride 2) -
  Mixed_5b, Mixed_5c; each module = 1x1 | 1x1-3x3 | 1x1-3x3 | maxpool(3x3x3)-1x1 branches,
  concatenated;
- logits: AvgPool3d (2x7x7, stride 1, 'VALID') - 1x1x1 conv with bias to 400 classes - squeeze
  space - mean over the remaining time steps.

Parameter names follow the PyTorch port (``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_4b.b1b.bn.running_var``, ``logits.conv3d.bias``, ...), so its state dict loads one-to-one
(see :func:`convert_pytorch_i3d_state_dict`). The TorchScript archive of StyleGAN-V
(``i3d_torchscript.pt``, manifest entry ``i3d-kinetics400``) is read without running it and
mapped onto these names by :mod:`vpcli.weights.convert_torchscript`.

The FVD embedding is the output of :meth:`InceptionI3d.forward`: the 400 logits averaged over
time, before the softmax — the tensor ``RGB/inception_i3d/Mean:0`` that the reference
implementation (google-research ``frechet_video_distance/frechet_video_distance.py``,
``create_id3_embedding``: "gets the kinetics-i3d-400-logits layer") reads from the TF-Hub module
``deepmind/i3d-kinetics-400/1``. Inputs are ``N,3,T,224,224`` in ``[-1, 1]`` with ``T >= 9``:
the time axis is divided by 8 (three stride-2 stages) and the final 2-frame average pool needs
at least 2 steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vpcli.errors import WeightsError

BN_EPS = 1e-3
MIN_FRAMES = 9
INPUT_SIZE = 224


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (front, back) for one axis: the output has ceil(size / stride) steps."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pads(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> list[tuple[int, int]]:
    return [_same_pads(s, k, st) for s, k, st in zip(x.shape[2:], kernel, stride)]  # T, H, W


class Unit3D(nn.Module):
    """Conv3d ('SAME') [+ BatchNorm3d] [+ ReLU]."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), *, batch_norm: bool = True, bias: bool = False,
                 relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=0.01) if batch_norm else None

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Conv weight and bias with the (frozen) batch norm folded in: one pass instead of two."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # C_out
        weight = self.conv3d.weight * scale.view(-1, 1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        if self.conv3d.bias is not None:
            bias = bias + self.conv3d.bias * scale
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fold = self.bn is not None and not self.training
        weight, bias = self._folded() if fold else (self.conv3d.weight, self.conv3d.bias)
        pads = _pads(x, self.kernel, self.stride)
        if all(f == b for f, b in pads):  # symmetric: let the convolution pad (faster than F.pad)
            x = F.conv3d(x, weight, bias, self.stride, padding=tuple(f for f, _ in pads))
        else:
            (tf, tb), (hf, hb), (wf, wb) = pads
            x = F.conv3d(F.pad(x, (wf, wb, hf, hb, tf, tb)), weight, bias, self.stride)
        if self.bn is not None and self.training:
            x = self.bn(x)
        return F.relu_(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max pool with TF 'SAME' padding.

    TF pads a max pool with -inf; the PyTorch port pads with zeros. Every pool here follows a
    ReLU (inputs >= 0), where the two agree; we pad with zeros like the port.

    The max is separable, so it is taken one axis at a time as an elementwise maximum of shifted
    (strided) views: 3 + 3 + 3 comparisons per output instead of 27, and no argmax indices
    (``F.max_pool3d`` on CPU computes them even for inference) — about 6x faster, same values.
    """

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (tf, tb), (hf, hb), (wf, wb) = _pads(x, self.kernel, self.stride)
        if tf or tb or hf or hb or wf or wb:
            x = F.pad(x, (wf, wb, hf, hb, tf, tb))
        for axis, k, s in zip((2, 3, 4), self.kernel, self.stride):
            if k == 1 and s == 1:
                continue
            n_out = (x.shape[axis] - k) // s + 1
            index = [slice(None)] * x.ndim
            out = None
            for j in range(k):  # out[i] = max_j x[i * s + j]
                index[axis] = slice(j, j + s * (n_out - 1) + 1, s)
                view = x[tuple(index)]
                out = view if out is None else torch.maximum(out, view)
            x = out
        return x


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: ``out = (b0, b1a->b1b, b2a->b2b, b3a->b3b)``."""

    def __init__(self, in_channels: int, out: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])
        self.out_channels = out[0] + out[2] + out[4] + out[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, in_channels, branch widths) of the inception modules, from the I3D paper / kinetics-i3d.
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """I3D: ``forward(x: N,3,T,224,224 in [-1,1]) -> N,num_classes`` time-averaged logits."""

    def __init__(self, num_classes: int = 400, in_channels: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*_MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(*_MIXED["Mixed_4b"])
        self.Mixed_4c = InceptionModule(*_MIXED["Mixed_4c"])
        self.Mixed_4d = InceptionModule(*_MIXED["Mixed_4d"])
        self.Mixed_4e = InceptionModule(*_MIXED["Mixed_4e"])
        self.Mixed_4f = InceptionModule(*_MIXED["Mixed_4f"])
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*_MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*_MIXED["Mixed_5c"])
        self.logits = Unit3D(1024, num_classes, batch_norm=False, bias=True, relu=False)

    @torch.no_grad()
    def random_init_(self, seed: int = 0) -> InceptionI3d:
        """Seeded He-normal weights (fan-in, ReLU gain) and neutral batch norms, in place.

        PyTorch's default init shrinks activations through the 60-odd layers until all videos embed
        alike; this keeps unit scale so that a random I3D still separates different videos (tests,
        benchmarks). Values computed with it are not FVD values.
        """
        gen = torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm3d):
                m.reset_parameters()  # weight 1, bias 0, running mean 0, running var 1
        return self

    _TRUNK = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
              "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
              "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c")

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """``N,3,T,H,W`` -> Mixed_5c output ``N,1024,T/8,H/32,W/32`` (ceil)."""
        if x.ndim != 5 or x.shape[1] != self.Conv3d_1a_7x7.conv3d.in_channels:
            raise ValueError(f"I3D expects N,{self.Conv3d_1a_7x7.conv3d.in_channels},T,H,W; got {tuple(x.shape)}")
        if x.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames; got {x.shape[2]}")
        for name in self._TRUNK:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool3d(self.trunk(x), kernel_size=(2, 7, 7), stride=1)  # 'VALID'
        x = self.logits(x)  # N,classes,T',h,w
        if x.shape[3:] != (1, 1):
            raise ValueError(f"I3D logits are {x.shape[3]}x{x.shape[4]} in space; resize inputs to "
                             f"{INPUT_SIZE}x{INPUT_SIZE}")
        return x.flatten(2).mean(dim=2)  # squeeze space, average logits over time: N,classes

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The 1024-d average-pooled Mixed_5c features (an alternative embedding; not standard FVD)."""
        return self.trunk(x).mean(dim=(2, 3, 4))


def convert_pytorch_i3d_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Check (and pass through) a ``piergiaj/pytorch-i3d`` ``InceptionI3d`` state dict for our model.

    The keys are the same; a ``module.`` prefix (DataParallel) is removed. Raises
    :class:`WeightsError` on missing/unexpected keys or a shape mismatch.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    reference = InceptionI3d().state_dict()
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    if missing or unexpected:
        raise WeightsError(f"I3D weights do not match Inception-I3D: {len(missing)} missing "
                           f"({', '.join(missing[:3])}) and {len(unexpected)} unexpected ({', '.join(unexpected[:3])}) keys",
                           "expected an RGB, 400-class InceptionI3d state dict (pytorch-i3d naming)")
    out = {}
    for key, ref in reference.items():
        value = state[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise WeightsError(f"I3D weights: {key!r} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}",
                               "expected an RGB, 400-class InceptionI3d state dict")
        out[key] = value.detach().to(ref.dtype).contiguous()
    return out
