"""Dilated backbones for semantic segmentation: MobileNetV2 and ResNet-50/101, in plain torch.

Both return two feature maps, ``(low, high)``: ``low`` at stride 4 (what the DeepLabV3+ decoder
refines with), ``high`` at the ``output_stride`` (8 or 16) that ASPP runs on. The last strides
are replaced by dilation (Chen et al. 2017, "Rethinking atrous convolution"): a stride-2 stage
becomes stride 1 and every later 3x3 conv dilates by the factor it lost, so the receptive field
is kept while the feature map stays larger.

The layer layouts follow VainF/DeepLabV3Plus-Pytorch (``network/backbone/*.py``) exactly, so
that its Cityscapes checkpoints convert one-to-one (``vpcli.weights.convert_deeplab``):

* ResNet uses torchvision's parameter names (``conv1``, ``bn1``, ``layer1.0.conv2`` ...), and
  dilates the first block of a dilated stage with the *previous* dilation, as torchvision does.
* MobileNetV2 reproduces two details of that code that differ from torchvision's MobileNetV2:
  the stem conv has no padding, and an inverted-residual block zero-pads its *input* (``fixed
  padding`` for the dilated 3x3) and then runs expansion, depthwise and projection convs without
  padding, so the expansion conv sees the zero border. Its channel widths use
  ``int(c * width_mult)`` per stage (as VainF does), ``_make_divisible`` for the stem.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "BACKBONES",
    "ConvBNAct",
    "MobileNetV2Backbone",
    "ResNetBackbone",
    "SeparableConv2d",
    "build_backbone",
]

# (expansion t, output channels c, repeats n, first stride s): MobileNetV2 paper, Table 2.
MOBILENETV2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# Blocks per stage of the bottleneck ResNets (He et al. 2016, Table 1).
RESNET_LAYERS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
BACKBONES = ("mobilenetv2", *RESNET_LAYERS)


class SeparableConv2d(nn.Module):
    """Atrous separable convolution: a (dilated) depthwise conv, then a 1x1 pointwise conv.

    Like VainF's ``AtrousSeparableConvolution`` there is no norm/activation between the two.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, *, stride: int = 1, padding: int = 0,
                 dilation: int = 1, bias: bool = False):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, kernel_size, stride, padding, dilation, groups=cin, bias=bias)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class ConvBNAct(nn.Module):
    """conv -> BatchNorm -> activation (``relu``, ``relu6`` or ``None``); parameters ``conv.*``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, *, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, act: str | None = "relu", separable: bool = False):
        super().__init__()
        if separable and kernel_size > 1:
            self.conv = SeparableConv2d(cin, cout, kernel_size, stride=stride, padding=padding, dilation=dilation)
        else:
            self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = {"relu": nn.ReLU(inplace=True), "relu6": nn.ReLU6(inplace=True), None: nn.Identity()}[act]

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


# ----------------------------------------------------------------------------------- MobileNetV2

def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor``, never more than 10% down (TF-slim mobilenet)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _fixed_padding(kernel_size: int, dilation: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that keeps a dilated kxk conv 'same' at stride 1."""
    total = kernel_size + (kernel_size - 1) * (dilation - 1) - 1
    return total // 2, total - total // 2, total // 2, total - total // 2


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion (t > 1), dilated 3x3 depthwise, linear 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int, dilation: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_residual = stride == 1 and cin == cout
        self.padding = _fixed_padding(3, dilation)
        self.expand = ConvBNAct(cin, hidden, 1, act="relu6") if expand_ratio != 1 else None
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride=stride, dilation=dilation, groups=hidden, act="relu6")
        self.project = ConvBNAct(hidden, cout, 1, act=None)

    def forward(self, x: Tensor) -> Tensor:
        y = F.pad(x, self.padding)  # padded before the expansion, as in VainF (see module doc)
        if self.expand is not None:
            y = self.expand(y)
        y = self.project(self.depthwise(y))
        return x + y if self.use_residual else y


class MobileNetV2Backbone(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) without its last 1x1 conv and classifier, dilated to
    ``output_stride``; ``low`` is the output of block 2 (stride 4, ``int(24 * width_mult)`` ch)."""

    LOW_LEVEL_BLOCK = 2  # blocks[0..2] = VainF features[1..3] ("low_level_features")

    def __init__(self, *, width_mult: float = 1.0, output_stride: int = 16):
        super().__init__()
        stem_ch = _make_divisible(32 * width_mult)
        self.stem = ConvBNAct(3, stem_ch, 3, stride=2, act="relu6")  # no padding: see module doc
        blocks, cin, stride_so_far, dilation = [], stem_ch, 2, 1
        for t, c, n, s in MOBILENETV2_SETTING:
            cout = int(c * width_mult)
            previous_dilation = dilation
            if stride_so_far == output_stride:  # the target stride is reached: dilate instead
                stride, dilation = 1, dilation * s
            else:
                stride, stride_so_far = s, stride_so_far * s
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1,
                                               previous_dilation if i == 0 else dilation, t))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.low_channels = int(24 * width_mult)
        self.out_channels = cin

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.stem(x)
        low = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.LOW_LEVEL_BLOCK:
                low = x
        return low, x


# ----------------------------------------------------------------------------------------- ResNet

class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride and dilation on the 3x3 conv), torchvision names."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetBackbone(nn.Module):
    """ResNet-50/101 without pooling and fc; layer3 (OS 8) and layer4 (OS 8 and 16) dilated."""

    def __init__(self, depth: str = "resnet101", *, output_stride: int = 16):
        super().__init__()
        layers = RESNET_LAYERS[depth]
        dilate = (False, True, True) if output_stride == 8 else (False, False, True)  # layer2..layer4
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._cin, self._dilation = 64, 1
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(256, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(512, layers[3], stride=2, dilate=dilate[2])
        self.low_channels, self.out_channels = 256, 2048

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._cin != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self._cin, planes * 4, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self._cin, planes, stride, previous_dilation, downsample)]
        self._cin = planes * 4
        layers += [Bottleneck(self._cin, planes, 1, self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        return low, self.layer4(self.layer3(self.layer2(low)))


def build_backbone(name: str, *, output_stride: int = 16, width_mult: float = 1.0) -> nn.Module:
    if name == "mobilenetv2":
        return MobileNetV2Backbone(width_mult=width_mult, output_stride=output_stride)
    if name in RESNET_LAYERS:
        return ResNetBackbone(name, output_stride=output_stride)
    raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")


def init_weights(module: nn.Module) -> None:
    """He-normal convs (fan_out, as torchvision/VainF backbones), BN to identity, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
