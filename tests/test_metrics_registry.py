"""The metric registry and the contract every per-frame metric keeps (shape, identity, errors)."""
from __future__ import annotations

import pytest
import torch

from vpcli import registry
from vpcli.errors import DataFormatError, UsageError
from vpcli.metrics import METRICS, PSNR_CAP_DB, get_metric

# Cheap constructors: learned metrics with random (seeded) weights, since none can be downloaded here.
_BUILD = {"lpips": {"pretrained": False}, "csim": {"pretrained": False}}
# (frame size, value of identical videos)
_IDENTITY = {"psnr": PSNR_CAP_DB, "ssim": 1.0, "ms-ssim": 1.0, "ms-ssim-3": 1.0, "lpips": 0.0, "mse": 0.0, "mae": 0.0}
FRAME_METRICS = sorted(n for n, cls in METRICS.items() if cls.kind == "frame")


def test_names_and_lookup():
    assert set(METRICS) == {"psnr", "ssim", "ms-ssim", "ms-ssim-3", "lpips", "csim", "mse", "mae", "bce", "miou", "epe", "fvd"}
    assert get_metric("MS_SSIM") is METRICS["ms-ssim"] and get_metric("msssim") is METRICS["ms-ssim"]
    with pytest.raises(UsageError, match="unknown metric 'ssmi'") as err:
        get_metric("ssmi")
    assert "did you mean 'ssim'" in err.value.hint and "lpips" in err.value.hint and "fvd" in err.value.hint
    assert err.value.exit_code == 2


def test_metrics_are_in_the_project_registry():
    assert set(METRICS) <= set(registry.names("metric"))
    assert registry.get("metric", "psnr").builder is METRICS["psnr"]


@pytest.mark.parametrize("name", FRAME_METRICS)
def test_frame_metric_contract(name):
    torch.manual_seed(0)
    metric = METRICS[name](**_BUILD.get(name, {}))
    assert isinstance(metric.higher_is_better, bool) and metric.name == name
    size = {"ms-ssim": 176, "ms-ssim-3": 48}.get(name, 40)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 3, size, size, generator=g)
    y = torch.rand(2, 3, 3, size, size, generator=g)
    values = metric(x, y)
    assert values.shape == (2, 3) and values.dtype == torch.float32 and torch.isfinite(values).all()
    same = metric(y, y)
    if name in _IDENTITY:
        torch.testing.assert_close(same, torch.full((2, 3), _IDENTITY[name]), atol=1e-5, rtol=0)
    # A perfect prediction of the same target scores at least as well (for BCE: Gibbs' inequality).
    better = same >= values - 1e-6 if metric.higher_is_better else same <= values + 1e-6
    assert bool(better.all())
    bad = y.clone()
    bad[1, 0, 2, 5, 5] = float("nan")
    with pytest.raises(DataFormatError, match=r"NaN or Inf in frame \(b=1, t=0\)"):
        metric(x, bad)
    with pytest.raises(DataFormatError, match=rf"pred \(2, 3, 3, {size}, {size}\) vs target \(2, 2, 3, {size}, {size}\)"):
        metric(x, y[:, :2])
