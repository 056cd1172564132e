"""LPIPS: the real v0.1 heads on a seeded random backbone against an independent numpy formula,
weight conversion (torchvision keys + lpips head keys -> one safetensors file), and errors.

The heads come from the ``lpips`` wheel (never installed: it pulls torchvision). Get it with
``pip download --no-deps lpips -d /tmp/lpips``, or point ``VPCLI_LPIPS_WHEEL`` at the wheel;
without it the tests that need the real heads are skipped.
"""
from __future__ import annotations

import glob
import io
import os
import zipfile

import numpy as np
import pytest
from conftest import missing_reference
import torch
import torch.nn.functional as F

from vpcli.errors import DataFormatError, OutputError, WeightsError
from vpcli.metrics import LPIPS
from vpcli.metrics.backbones import VGG16, AlexNet
from vpcli.metrics.lpips import (
    LPIPS_SCALE,
    LPIPS_SHIFT,
    convert_lpips_heads,
    convert_lpips_weights,
    lpips,
    save_lpips_weights,
)


def _wheel() -> str | None:
    path = os.environ.get("VPCLI_LPIPS_WHEEL")
    if path and os.path.isfile(path):
        return path
    here = os.path.join(os.path.dirname(__file__), ".refs", "lpips-*.whl")  # scripts/install-test-deps.sh
    found = sorted(glob.glob(here)) or sorted(glob.glob("/tmp/lpips/lpips-*.whl"))
    return found[-1] if found else None


@pytest.fixture(scope="module")
def lpips_heads() -> dict[str, dict[str, torch.Tensor]]:
    wheel = _wheel()
    if wheel is None:
        missing_reference("lpips wheel not found: run scripts/install-test-deps.sh or set VPCLI_LPIPS_WHEEL")
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        for net in ("alex", "vgg"):
            raw = zf.read(f"lpips/weights/v0.1/{net}.pth")
            out[net] = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    return out


def _frames(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


# --- an independent reference ----------------------------------------------------------------

def _reference_features(state: dict[str, torch.Tensor], net: str, x: torch.Tensor) -> list[np.ndarray]:
    """Backbone features from the raw state dict with functional ops (no vpcli module involved)."""
    def conv(h, i, stride=1, pad=1):
        return F.relu(F.conv2d(h, state[f"net.features.{i}.weight"], state[f"net.features.{i}.bias"],
                               stride=stride, padding=pad))

    feats = []
    if net == "alex":
        h = conv(x, 0, stride=4, pad=2); feats.append(h)
        h = conv(F.max_pool2d(h, 3, 2), 3, pad=2); feats.append(h)
        h = conv(F.max_pool2d(h, 3, 2), 6); feats.append(h)
        h = conv(h, 8); feats.append(h)
        h = conv(h, 10); feats.append(h)
    else:
        blocks = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]
        h = x
        for k, convs in enumerate(blocks):
            if k:
                h = F.max_pool2d(h, 2, 2)
            for i in convs:
                h = conv(h, i)
            feats.append(h)
    return [f.double().numpy() for f in feats]


def _reference_lpips(state: dict[str, torch.Tensor], net: str, img0: torch.Tensor, img1: torch.Tensor) -> np.ndarray:
    """The reference formula, layer by layer in float64 numpy. Images N,3,H,W in [0, 1]."""
    shift = np.array(LPIPS_SHIFT).reshape(1, 3, 1, 1)
    scale = np.array(LPIPS_SCALE).reshape(1, 3, 1, 1)
    scaled = [torch.tensor(((2 * im.double().numpy() - 1) - shift) / scale, dtype=torch.float32) for im in (img0, img1)]
    f0 = _reference_features(state, net, scaled[0])
    f1 = _reference_features(state, net, scaled[1])
    total = np.zeros(img0.shape[0])
    for layer in range(5):
        a, b = f0[layer], f1[layer]
        a = a / (np.sqrt((a ** 2).sum(axis=1, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b ** 2).sum(axis=1, keepdims=True)) + 1e-10)
        w = state[f"lin{layer}.weight"].double().numpy().reshape(-1)  # C
        for n in range(a.shape[0]):
            weighted = np.tensordot(w, (a[n] - b[n]) ** 2, axes=(0, 0))  # h,w
            total[n] += weighted.mean()
    return total


@pytest.mark.parametrize("net,size", [("alex", (64, 64)), ("vgg", (48, 64))])
def test_real_heads_on_random_backbone_match_independent_formula(lpips_heads, net, size):
    torch.manual_seed(0)
    model = LPIPS(net, pretrained=False)
    heads = convert_lpips_heads(lpips_heads[net], net)
    model.load_state_dict({**model.state_dict(), **heads})
    x0 = _frames(4, *size, seed=1).view(2, 2, 3, *size)
    x1 = _frames(4, *size, seed=2).view(2, 2, 3, *size)
    ours = model(x0, x1)
    assert ours.shape == (2, 2)
    state = model.state_dict()
    ref = _reference_lpips(state, net, x0.reshape(4, 3, *size), x1.reshape(4, 3, *size))
    np.testing.assert_allclose(ours.reshape(-1).double().numpy(), ref, atol=1e-5, rtol=0)
    assert torch.all(model(x0, x0) == 0)  # identical images: exactly 0


def test_head_converter_maps_lpips_keys(lpips_heads):
    heads = convert_lpips_heads(lpips_heads["alex"], "alex")
    assert sorted(heads) == [f"lin{k}.weight" for k in range(5)]
    assert [tuple(v.shape) for v in heads.values()] == [(1, c, 1, 1) for c in (64, 192, 384, 256, 256)]
    torch.testing.assert_close(heads["lin2.weight"], lpips_heads["alex"]["lin2.model.1.weight"])
    with pytest.raises(WeightsError, match="shape"):
        convert_lpips_heads(lpips_heads["vgg"], "alex")
    bad = {k: -v for k, v in lpips_heads["alex"].items()}
    bad["lin0.model.1.weight"] = bad["lin0.model.1.weight"] - 1
    with pytest.raises(WeightsError, match="negative"):
        convert_lpips_heads(bad, "alex")


def test_torchvision_and_head_files_convert_to_one_safetensors_file(tmp_path, lpips_heads):
    torch.manual_seed(3)
    backbone = AlexNet(include_classifier=False)
    tv_state = {k: v.clone() for k, v in backbone.state_dict().items()}
    # torchvision's file also carries the classifier; the converter drops it.
    tv_state.update({"classifier.1.weight": torch.zeros(4096, 9216), "classifier.6.bias": torch.zeros(1000)})
    torch.save(tv_state, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(lpips_heads["alex"], tmp_path / "alex.pth")
    out = save_lpips_weights(tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alex.pth",
                             tmp_path / "lpips-alex.safetensors", net="alex")
    combined = LPIPS("alex", weights=out)
    heads_then_backbone = LPIPS("alex", weights=tmp_path / "alex.pth",
                                backbone_weights=tmp_path / "alexnet-owt-7be5be79.pth")
    reference = LPIPS("alex", pretrained=False)
    reference.load_state_dict(convert_lpips_weights(tv_state, lpips_heads["alex"], "alex"))
    x0, x1 = torch.rand(1, 3, 3, 64, 64), torch.rand(1, 3, 3, 64, 64)
    expected = reference(x0, x1)
    torch.testing.assert_close(combined(x0, x1), expected)
    torch.testing.assert_close(heads_then_backbone(x0, x1), expected)
    torch.testing.assert_close(lpips(x0, x1, model=combined), expected)
    with pytest.raises(OutputError):  # an existing file is kept unless overwrite=True
        save_lpips_weights(tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alex.pth", out, net="alex")


def test_missing_weights_is_a_clear_weights_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray file named like the entry
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError) as err:
        LPIPS("vgg")
    text = str(err.value)
    assert "lpips-vgg" in text and "\n" not in text
    assert err.value.hint == "LPIPS-vgg needs vgg16 and the LPIPS v0.1 heads: vpcli weights download lpips-vgg"
    with pytest.raises(WeightsError, match="not found"):
        LPIPS("alex", weights=tmp_path / "nope.safetensors")


def test_backbones_have_torchvision_state_dict_keys():
    # torchvision.models.alexnet() / vgg16(): (key, shape) of every parameter.
    alex = {"features.0": (64, 3, 11, 11), "features.3": (192, 64, 5, 5), "features.6": (384, 192, 3, 3),
            "features.8": (256, 384, 3, 3), "features.10": (256, 256, 3, 3),
            "classifier.1": (4096, 9216), "classifier.4": (4096, 4096), "classifier.6": (1000, 4096)}
    vgg_convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    chans = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    vgg = {f"features.{i}": (chans[j + 1], chans[j], 3, 3) for j, i in enumerate(vgg_convs)}
    vgg.update({"classifier.0": (4096, 25088), "classifier.3": (4096, 4096), "classifier.6": (1000, 4096)})
    for cls, expected in ((AlexNet, alex), (VGG16, vgg)):
        with torch.device("meta"):  # shapes only, no 500 MB of random classifier weights
            state = cls(include_classifier=True).state_dict()
        want = {}
        for k, shape in expected.items():
            want[k + ".weight"] = shape
            want[k + ".bias"] = shape[:1]
        assert {k: tuple(v.shape) for k, v in state.items()} == want


def test_lpips_input_checks():
    model = LPIPS("alex", pretrained=False)
    x = torch.rand(1, 2, 3, 64, 64)
    y = x.clone()
    y[0, 1, 0, 0, 0] = float("nan")
    with pytest.raises(DataFormatError, match=r"target holds NaN or Inf in frame \(b=0, t=1\)"):
        model(x, y)
    with pytest.raises(DataFormatError, match=r"pred \(1, 2, 3, 64, 64\) vs target \(1, 2, 3, 64, 32\)"):
        model(x, torch.rand(1, 2, 3, 64, 32))
    grey = torch.rand(1, 2, 1, 64, 64)
    torch.testing.assert_close(model(grey, grey.flip(-1)), model(grey.expand(-1, -1, 3, -1, -1),
                                                                 grey.flip(-1).expand(-1, -1, 3, -1, -1)))
