"""VGG cosine similarity: a seeded random VGG16 against an independent numpy formula; weights loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vpcli.errors import DataFormatError, WeightsError
from vpcli.metrics import CSIM
from vpcli.metrics.backbones import VGG16
from vpcli.metrics.csim import csim


def _reference(state: dict[str, torch.Tensor], x0: torch.Tensor, x1: torch.Tensor, layers: str) -> np.ndarray:
    """Per-image CSIM with functional VGG16 ops and numpy loops over maps and positions."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def maps(x):
        h = (x - mean) / std
        out_blocks, out_all = [], []
        for block, convs in enumerate([[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]):
            for i in convs:
                h = F.relu(F.conv2d(h, state[f"net.features.{i}.weight"], state[f"net.features.{i}.bias"], padding=1))
                out_all.append(h)
            out_blocks.append(h)
            h = F.max_pool2d(h, 2, 2)
            out_all.append(h)
        return out_blocks if layers == "blocks" else out_all

    m0, m1 = maps(x0), maps(x1)
    result = np.zeros(x0.shape[0])
    for a, b in zip(m0, m1):
        a, b = a.double().numpy(), b.double().numpy()
        for n in range(a.shape[0]):
            sims = []
            for i in range(a.shape[2]):
                for j in range(a.shape[3]):
                    u, v = a[n, :, i, j], b[n, :, i, j]
                    sims.append(np.dot(u / (np.linalg.norm(u) + 1e-10), v / (np.linalg.norm(v) + 1e-10)))
            result[n] += np.mean(sims) / len(m0)
    return result


@pytest.mark.parametrize("layers", ["blocks", "all"])
def test_matches_independent_formula(layers):
    torch.manual_seed(0)
    model = CSIM(pretrained=False, layers=layers, batch_size=2)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(1, 3, 3, 32, 48, generator=g)
    x1 = (x0 + 0.2 * torch.rand(1, 3, 3, 32, 48, generator=g)).clamp(0, 1)
    ours = model(x0, x1)
    assert ours.shape == (1, 3)
    state = {f"net.{k}": v for k, v in model.net.state_dict().items()}
    ref = _reference(state, x0[0], x1[0], layers)
    np.testing.assert_allclose(ours[0].double().numpy(), ref, atol=1e-5)
    same = model(x0, x0)
    assert torch.all(same <= 1 + 1e-6) and torch.all(same > 0.5)
    np.testing.assert_allclose(same[0].double().numpy(), _reference(state, x0[0], x0[0], layers), atol=1e-5)


def test_weights_from_a_torchvision_file_and_errors(tmp_path, monkeypatch):
    torch.manual_seed(2)
    with torch.device("meta"):
        shapes = VGG16(include_classifier=True).state_dict()
    vgg = VGG16()
    tv_state = {k: v.clone() for k, v in vgg.state_dict().items()}
    tv_state["classifier.6.bias"] = torch.zeros(shapes["classifier.6.bias"].shape)
    torch.save(tv_state, tmp_path / "vgg16-397923af.pth")
    model = CSIM(tmp_path / "vgg16-397923af.pth")
    reference = CSIM(pretrained=False)
    reference.net.load_state_dict(vgg.state_dict())
    x0, x1 = torch.rand(1, 2, 3, 32, 32), torch.rand(1, 2, 3, 32, 32)
    torch.testing.assert_close(model(x0, x1), reference(x0, x1))
    torch.testing.assert_close(csim(x0, x1, model=model), reference(x0, x1))
    resized = CSIM(pretrained=False, resize=64)
    assert resized(x0, x1).shape == (1, 2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match="vgg16-imagenet") as err:
        CSIM()
    assert err.value.hint == "CSIM needs torchvision's ImageNet VGG16: vpcli weights download vgg16-imagenet"
    with pytest.raises(DataFormatError, match="too small"):
        reference(torch.rand(1, 1, 3, 16, 16), torch.rand(1, 1, 3, 16, 16))
