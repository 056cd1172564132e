"""PSNR, MSE, MAE, BCE: hand-computed values, the PSNR cap, and the shared input checks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vpcli.errors import DataFormatError
from vpcli.metrics import BCE, MAE, MSE, PSNR, PSNR_CAP_DB
from vpcli.metrics.pixel import bce, mae, mse
from vpcli.metrics.psnr import psnr


def _video(b=2, t=3, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, c, h, w, generator=g)


def test_psnr_matches_hand_computation():
    target = torch.zeros(1, 2, 1, 4, 4)
    pred = target.clone()
    pred[0, 0] = 0.1  # every value off by 0.1: MSE 0.01 -> 20 dB
    pred[0, 1, 0, 0, 0] = 1.0  # one pixel of 16 off by 1: MSE 1/16 -> 10*log10(16)
    values = psnr(pred, target)
    assert values.shape == (1, 2) and values.dtype == torch.float32
    assert values[0, 0].item() == pytest.approx(20.0, abs=1e-4)
    assert values[0, 1].item() == pytest.approx(10 * math.log10(16), abs=1e-4)


def test_psnr_identical_frames_are_capped_and_flagged():
    x = _video()
    y = x.clone()
    y[1, 2] = (y[1, 2] + 0.05).clamp(0, 1)  # only this frame differs
    values, capped = psnr(y, x, return_capped=True)
    assert capped.dtype == torch.bool and capped.shape == (2, 3)
    assert int(capped.sum()) == 5 and not bool(capped[1, 2])
    assert torch.all(values[capped] == PSNR_CAP_DB)
    assert torch.isfinite(values).all() and values[1, 2] < PSNR_CAP_DB
    assert PSNR_CAP_DB == 100.0
    # The registry class exposes the same flags; a custom cap is honoured.
    v2, c2 = PSNR(cap_db=60.0).with_capped(x, x)
    assert torch.all(v2 == 60.0) and bool(c2.all())


def test_psnr_average_over_frames_matches_numpy():
    x, y = _video(seed=1), _video(seed=2)
    ours = psnr(x, y).mean(dim=1)
    a, b = x.double().numpy(), y.double().numpy()
    ref = [np.mean([10 * np.log10(1 / np.mean((a[i, t] - b[i, t]) ** 2)) for t in range(3)]) for i in range(2)]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)


def test_mse_mae_hand_values_and_sum_reduction():
    target = torch.zeros(1, 1, 1, 2, 2)
    pred = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 1, 2, 2)
    assert mse(pred, target).item() == pytest.approx((0.25 + 1 + 0.0625) / 4)
    assert mae(pred, target).item() == pytest.approx((0.5 + 1 + 0.25) / 4)
    assert mse(pred, target, reduction="sum").item() == pytest.approx(1.3125)
    assert MSE()(pred, target).shape == (1, 1) and MAE()(pred, target).shape == (1, 1)


def test_bce_matches_formula_and_torch_away_from_the_clamp():
    x = _video(seed=3).clamp(0.01, 0.99)
    y = (_video(seed=4) > 0.5).float()
    ours = bce(x, y)
    ref = F.binary_cross_entropy(x.double(), y.double(), reduction="none").flatten(2).mean(2)
    torch.testing.assert_close(ours, ref.float(), atol=1e-6, rtol=1e-6)
    # The eps clamp bounds a confidently wrong pixel: -log(1e-7).
    worst = bce(torch.zeros(1, 1, 1, 1, 1), torch.ones(1, 1, 1, 1, 1))
    assert worst.item() == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert BCE(eps=1e-3)(torch.zeros(1, 1, 1, 1, 1), torch.ones(1, 1, 1, 1, 1)).item() == pytest.approx(-math.log(1e-3))


@pytest.mark.parametrize("fn", [psnr, mse, mae, bce])
def test_nan_frame_is_a_clear_data_format_error(fn):
    x, y = _video(), _video(seed=5)
    y[1, 2, 0, 3, 3] = float("nan")
    with pytest.raises(DataFormatError, match=r"target holds NaN or Inf in frame \(b=1, t=2\)"):
        fn(x, y)


@pytest.mark.parametrize("fn", [psnr, mse, mae, bce])
def test_mismatched_shapes_name_both_shapes(fn):
    with pytest.raises(DataFormatError, match=r"pred \(2, 3, 3, 8, 8\) vs target \(2, 4, 3, 8, 8\)"):
        fn(_video(), _video(t=4))


def test_other_bad_inputs_say_how_to_fix():
    x = _video()
    with pytest.raises(DataFormatError, match=r"\[0, 1\]") as err:
        psnr(x * 255, x)
    assert "255" in err.value.hint
    with pytest.raises(DataFormatError, match="5-D"):
        psnr(x[0], x[0])
    with pytest.raises(DataFormatError, match="floating"):
        psnr((x * 255).to(torch.uint8), (x * 255).to(torch.uint8))
    with pytest.raises(DataFormatError, match="torch.Tensor"):
        psnr(x.numpy(), x)
