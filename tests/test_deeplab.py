"""DeepLabV3+: architecture facts, the VainF converter (parity with an independent functional
reference of VainF's forward pass), the training contract, and a seeded regression slice."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from vpcli.errors import ConfigError, DataFormatError
from vpcli.preprocess.deeplab import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DeepLabConfig,
    DeepLabV3Plus,
)
from vpcli.weights.convert_deeplab import (
    convert_deeplab_vainf,
    convert_vainf_file,
    vainf_config,
    vainf_key_to_ours,
    vainf_state_shapes,
)

TINY = dict(width_mult=0.25, aspp_channels=16, decoder_channels=16, low_level_channels=8, separable=True)


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


# --------------------------------------------------------------------- a VainF-keyed state dict

def random_vainf_state(arch: str, *, num_classes: int = 19, separable: bool = False, seed: int = 0):
    """Random tensors for every key VainF's model has; weights scaled so 100 layers stay finite."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in vainf_state_shapes(arch, num_classes=num_classes, separable=separable).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean") or key.endswith(".bias"):
            state[key] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1:  # BN weight
            state[key] = torch.rand(shape, generator=g) * 0.5 + 0.5
        else:
            fan_in = int(np.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return state


# --------------------------------------- reference forward, written from VainF's code (not ours)

def _bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        False, 0.0, 1e-5)


def _ref_conv3(x, sd, p, dilation, padding):
    if f"{p}.body.0.weight" in sd:  # AtrousSeparableConvolution: depthwise then pointwise, no BN between
        x = F.conv2d(x, sd[f"{p}.body.0.weight"], None, 1, padding, dilation, groups=x.shape[1])
        return F.conv2d(x, sd[f"{p}.body.1.weight"])
    return F.conv2d(x, sd[f"{p}.weight"], None, 1, padding, dilation)


def _ref_mobilenet(sd, x, os):
    feats = lambda j: f"backbone.{'low' if j <= 3 else 'high'}_level_features.{j}"
    # features[0]: ConvBNReLU(3, 32, stride=2) with padding 0 (ConvBNReLU passes 0)
    x = F.relu6(_bn(F.conv2d(x, sd[f"{feats(0)}.0.weight"], stride=2), sd, f"{feats(0)}.1"))
    setting = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    cur, dil, j, cin, low = 2, 1, 1, 32, None
    for t, c, n, s in setting:
        prev = dil
        if cur == os:
            stride, dil = 1, dil * s
        else:
            stride, cur = s, cur * s
        for i in range(n):
            st, d = (stride, prev) if i == 0 else (1, dil)
            p = f"{feats(j)}.conv"
            eff = 3 + 2 * (d - 1)
            pad = ((eff - 1) // 2, eff - 1 - (eff - 1) // 2) * 2
            y = F.pad(x, pad)
            hidden = cin * t
            if t != 1:
                y = F.relu6(_bn(F.conv2d(y, sd[f"{p}.0.0.weight"]), sd, f"{p}.0.1"))
                dw, pw, pbn = f"{p}.1", f"{p}.2", f"{p}.3"
            else:
                dw, pw, pbn = f"{p}.0", f"{p}.1", f"{p}.2"
            y = F.relu6(_bn(F.conv2d(y, sd[f"{dw}.0.weight"], None, st, 0, d, groups=hidden), sd, f"{dw}.1"))
            y = _bn(F.conv2d(y, sd[f"{pw}.weight"]), sd, pbn)
            x = x + y if (st == 1 and cin == c) else y
            if j == 3:
                low = x
            cin, j = c, j + 1
    return low, x


def _ref_resnet(sd, x, os, blocks):
    x = F.relu(_bn(F.conv2d(x, sd["backbone.conv1.weight"], stride=2, padding=3), sd, "backbone.bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    replace = [False, True, True] if os == 8 else [False, False, True]
    dil, low = 1, None
    for li, n in enumerate(blocks, 1):
        stride = 1 if li == 1 else 2
        prev = dil
        if li > 1 and replace[li - 2]:
            dil, stride = dil * stride, 1
        for b in range(n):
            p = f"backbone.layer{li}.{b}"
            st, d = (stride, prev) if b == 0 else (1, dil)
            out = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
            out = F.relu(_bn(F.conv2d(out, sd[f"{p}.conv2.weight"], None, st, d, d), sd, f"{p}.bn2"))
            out = _bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            idt = _bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=st), sd, f"{p}.downsample.1") \
                if f"{p}.downsample.0.weight" in sd else x
            x = F.relu(out + idt)
        if li == 1:
            low = x
    return low, x


def vainf_reference_forward(sd, x, arch, os=16):
    """VainF's DeepLabV3+ forward on an already-normalised image, from their state dict."""
    if arch == "deeplabv3plus_mobilenet":
        low, high = _ref_mobilenet(sd, x, os)
    else:
        low, high = _ref_resnet(sd, x, os, (3, 4, 23, 3) if arch.endswith("101") else (3, 4, 6, 3))
    rates = (6, 12, 18) if os == 16 else (12, 24, 36)
    c = "classifier"
    low = F.relu(_bn(F.conv2d(low, sd[f"{c}.project.0.weight"]), sd, f"{c}.project.1"))
    res = [F.relu(_bn(F.conv2d(high, sd[f"{c}.aspp.convs.0.0.weight"]), sd, f"{c}.aspp.convs.0.1"))]
    for i, r in enumerate(rates, 1):
        res.append(F.relu(_bn(_ref_conv3(high, sd, f"{c}.aspp.convs.{i}.0", r, r), sd, f"{c}.aspp.convs.{i}.1")))
    pooled = F.relu(_bn(F.conv2d(F.adaptive_avg_pool2d(high, 1), sd[f"{c}.aspp.convs.4.1.weight"]), sd,
                        f"{c}.aspp.convs.4.2"))
    res.append(F.interpolate(pooled, size=high.shape[-2:], mode="bilinear", align_corners=False))
    aspp = F.relu(_bn(F.conv2d(torch.cat(res, 1), sd[f"{c}.aspp.project.0.weight"]), sd, f"{c}.aspp.project.1"))
    aspp = F.interpolate(aspp, size=low.shape[-2:], mode="bilinear", align_corners=False)
    y = torch.cat([low, aspp], 1)
    y = F.relu(_bn(_ref_conv3(y, sd, f"{c}.classifier.0", 1, 1), sd, f"{c}.classifier.1"))
    y = F.conv2d(y, sd[f"{c}.classifier.3.weight"], sd[f"{c}.classifier.3.bias"])
    return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _normalise(x):
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------------- converter

@pytest.mark.parametrize("arch, os, separable, size", [
    ("deeplabv3plus_mobilenet", 16, False, (67, 93)),   # odd sizes exercise the padding quirks
    ("deeplabv3plus_mobilenet", 8, True, (64, 80)),
    ("deeplabv3plus_resnet101", 16, False, (48, 64)),
    ("deeplabv3plus_resnet50", 8, False, (40, 40)),
])
def test_vainf_conversion_is_one_to_one_and_output_equal(arch, os, separable, size):
    theirs = random_vainf_state(arch, separable=separable)
    ours = convert_deeplab_vainf(theirs, arch)
    assert len(ours) == len(theirs)  # one-to-one
    model = DeepLabV3Plus(vainf_config(arch, output_stride=os, separable=separable)).eval()
    own = model.state_dict()
    assert set(ours) == set(own), (set(own) ^ set(ours))
    for k, v in ours.items():
        assert own[k].shape == v.shape, k
    model.load_state_dict(ours, strict=True)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(x)
        want = vainf_reference_forward(theirs, _normalise(x), arch, os)
    assert got.shape == (1, 19, *size)
    scale = want.abs().max()
    assert torch.allclose(got, want, atol=1e-4 * float(scale), rtol=1e-4), float((got - want).abs().max() / scale)


def test_vainf_parameter_counts_match_published_models():
    # deeplabv3plus_mobilenet 5.22 M and deeplabv3plus_resnet101 58.75 M parameters (VainF's models).
    for arch, millions in (("deeplabv3plus_mobilenet", 5.22), ("deeplabv3plus_resnet101", 58.75)):
        shapes = vainf_state_shapes(arch)
        n = sum(int(np.prod(s)) for k, s in shapes.items() if not k.split(".")[-1].startswith(("running", "num_b")))
        assert abs(n / 1e6 - millions) < 0.01, (arch, n)
        with torch.device("meta"):
            model = DeepLabV3Plus(vainf_config(arch))
        assert sum(p.numel() for p in model.parameters()) == n


def test_converter_reads_a_vainf_checkpoint_file_with_numpy_scores(tmp_path):
    theirs = random_vainf_state("deeplabv3plus_mobilenet", seed=3)
    path = tmp_path / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
    torch.save({"cur_itrs": 30000, "model_state": theirs, "optimizer_state": {"state": {}, "param_groups": []},
                "best_score": np.float64(0.721)}, path)
    ours = convert_deeplab_vainf(path, "deeplabv3plus_mobilenet")
    assert torch.equal(ours["backbone.blocks.16.project.conv.weight"],
                       theirs["backbone.high_level_features.17.conv.2.weight"])
    out = tmp_path / "converted.safetensors"
    cfg = convert_vainf_file(path, out, "deeplabv3plus_mobilenet", fp16=True)
    assert cfg["num_classes"] == 19 and cfg["classes"][0] == "road"
    assert (tmp_path / "converted.config.json").exists()


def test_converter_rejects_wrong_architecture_and_garbage(tmp_path):
    theirs = random_vainf_state("deeplabv3plus_mobilenet")
    with pytest.raises(DataFormatError, match="does not match VainF's deeplabv3plus_resnet50"):
        convert_deeplab_vainf(theirs, "deeplabv3plus_resnet50")
    broken = dict(theirs)
    broken.pop("classifier.aspp.convs.4.1.weight")
    with pytest.raises(DataFormatError, match="missing: classifier.aspp.convs.4.1.weight"):
        convert_deeplab_vainf(broken, "deeplabv3plus_mobilenet")
    with pytest.raises(DataFormatError, match="19 classes, 21 were asked"):
        convert_deeplab_vainf(theirs, "deeplabv3plus_mobilenet", num_classes=21)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataFormatError, match="cannot read"):
        convert_deeplab_vainf(bad, "deeplabv3plus_mobilenet")
    assert vainf_key_to_ours("backbone.high_level_features.2.conv.0.0.weight", "deeplabv3plus_mobilenet") is None
    # A Pascal VOC checkpoint (21 classes) converts too.
    voc = convert_deeplab_vainf(random_vainf_state("deeplabv3plus_mobilenet", num_classes=21), "deeplabv3plus_mobilenet")
    assert voc["classifier.weight"].shape == (21, 256, 1, 1)


# ------------------------------------------------------------------------------- architecture

@pytest.mark.parametrize("backbone, os", [("mobilenetv2", 16), ("mobilenetv2", 8), ("resnet50", 16)])
def test_output_stride_and_aspp_rates(backbone, os):
    cfg = DeepLabConfig(backbone=backbone, output_stride=os, **(TINY if backbone == "mobilenetv2" else
                                                                dict(aspp_channels=8, decoder_channels=8)))
    assert cfg.atrous_rates == ((6, 12, 18) if os == 16 else (12, 24, 36))
    model = DeepLabV3Plus(cfg).eval()
    rates = [b.conv.depthwise.dilation[0] if cfg.separable else b.conv.dilation[0] for b in model.aspp.branches[1:]]
    assert tuple(rates) == cfg.atrous_rates
    with torch.no_grad():
        low, high = model.backbone(torch.rand(1, 3, 128, 128))
    assert low.shape[-1] == 32 and high.shape[-1] == 128 // os
    assert model(torch.rand(2, 3, 50, 70)).shape == (2, 19, 50, 70)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="output_stride must be 8 or 16, got 32"):
        DeepLabConfig(output_stride=32)
    with pytest.raises(ConfigError, match="backbon"):
        DeepLabConfig.from_dict({"backbon": "resnet50"})
    with pytest.raises(ConfigError, match="3 class names for num_classes=19"):
        DeepLabConfig(classes=("a", "b", "c"))


def test_training_contract_through_the_trainer(tmp_path):
    from vpcli.engine.trainer import TrainConfig, Trainer, load_weights

    class Frames(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):  # left half class 0, right half class 1, a strip of ignore
            g = torch.Generator().manual_seed(i)
            lab = torch.zeros(1, 32, 48, dtype=torch.int64)
            lab[..., 24:] = 1
            lab[..., 0, :] = 255
            rgb = torch.rand(1, 3, 32, 48, generator=g) * 0.2 + lab.clamp(max=1).float()[:, None] * 0.6
            return {"rgb": rgb, "labels": lab}  # (T=1, 3, H, W), (T=1, H, W)

    torch.manual_seed(0)
    model = DeepLabV3Plus(dict(TINY, num_classes=2))
    cfg = TrainConfig(steps=6, batch_size=2, log_every=3, val_every=3, val_batches=1, best_metric="val/miou",
                      best_mode="max")
    summary = Trainer(model, Frames(), cfg, tmp_path, val_set=Frames()).fit()
    assert summary["status"] == "finished" and summary["step"] == 6
    losses = model({"rgb": torch.rand(2, 1, 3, 32, 48), "labels": torch.zeros(2, 1, 32, 48, dtype=torch.long)})
    assert set(losses) == {"loss"} and losses["loss"].requires_grad
    scores = model.validate(Frames()[0] | {"rgb": Frames()[0]["rgb"][None], "labels": Frames()[0]["labels"][None]},
                            None)
    assert {"loss", "pixel_acc", "miou"} <= set(scores)
    fresh = DeepLabV3Plus(dict(TINY, num_classes=2))
    load_weights(fresh, tmp_path / "checkpoints" / "best.safetensors")


def test_registered_as_segmenter():
    from vpcli import registry
    entry = registry.get("segmenter", "deeplabv3plus")
    assert entry.config_cls is DeepLabConfig
    assert isinstance(entry.builder(DeepLabConfig(**TINY)), DeepLabV3Plus)


def test_seeded_tiny_model_regression_slice():
    """A checked-in 3x3 slice of logits of a seeded tiny model (catches silent layout changes)."""
    torch.manual_seed(0)
    model = DeepLabV3Plus(dict(TINY)).eval()
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model(x)[0, :3, 10, [5, 20, 40]]  # classes 0..2 at three columns of row 10
    assert torch.allclose(got, torch.tensor(EXPECTED_SLICE), rtol=1e-3, atol=1e-6), got.tolist()


EXPECTED_SLICE = [[0.0156571, 0.0042207, 0.0372370],
                  [-0.0044722, -0.0051312, -0.0045180],
                  [-0.0013217, -0.0024388, 0.0046582]]
