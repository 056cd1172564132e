"""SSIM / MS-SSIM against scikit-image and pytorch-msssim on random and real photographs."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import missing_reference
import torch
from skimage import data
from skimage.metrics import structural_similarity

from vpcli.errors import DataFormatError
from vpcli.metrics import MSSSIM, SSIM
from vpcli.metrics.ssim import ms_ssim, ssim

TOL = 1e-4


def _pair(img: np.ndarray, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    noisy = np.clip(img + rng.normal(0, noise, img.shape), 0, 1)
    return img, noisy


def _real_images() -> dict[str, np.ndarray]:
    return {
        "astronaut": data.astronaut()[16:208, 160:368] / 255.0,
        "coffee": data.coffee()[100:276, 150:358] / 255.0,
        "chelsea": data.chelsea()[50:226, 150:358] / 255.0,
    }


def _to_video(*imgs: np.ndarray) -> torch.Tensor:
    """H,W,3 images -> 1,T,3,H,W float32."""
    return torch.tensor(np.stack([i.transpose(2, 0, 1) for i in imgs])[None], dtype=torch.float32)


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1, channel_axis=2)


def test_ssim_matches_scikit_image_on_real_and_random_images():
    rng = np.random.default_rng(0)
    pairs = [_pair(img, 0.08, i) for i, img in enumerate(_real_images().values())]
    a = rng.random((37, 45, 3))
    pairs.append((a, np.clip(a + rng.normal(0, 0.3, a.shape), 0, 1)))  # random, odd size
    pairs.append((a, rng.random((37, 45, 3))))  # unrelated: SSIM near 0
    for x, y in pairs:
        ours = ssim(_to_video(y), _to_video(x)).item()
        assert ours == pytest.approx(_skimage_ssim(x, y), abs=TOL)


def test_ssim_batches_frames_and_matches_per_frame_calls():
    rng = np.random.default_rng(1)
    frames = [rng.random((24, 32, 3)) for _ in range(6)]
    x = torch.tensor(np.stack([f.transpose(2, 0, 1) for f in frames]), dtype=torch.float32).view(2, 3, 3, 24, 32)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    full = ssim(y, x)
    assert full.shape == (2, 3)
    torch.testing.assert_close(ssim(y, x, batch_size=1), full)
    for b in range(2):
        for t in range(3):
            ref = _skimage_ssim(x[b, t].double().permute(1, 2, 0).numpy(), y[b, t].double().permute(1, 2, 0).numpy())
            assert full[b, t].item() == pytest.approx(ref, abs=TOL)


def test_ssim_and_ms_ssim_match_pytorch_msssim():
    try:
        import pytorch_msssim as pm
    except ImportError:
        missing_reference("pytorch-msssim is not installed: run scripts/install-test-deps.sh")
    imgs = _real_images()
    rng = np.random.default_rng(2)
    rand = rng.random((181, 203, 3))  # odd sizes: MS-SSIM pads before each 2x2 pooling
    cases = [_pair(imgs["astronaut"], 0.1, 0), _pair(imgs["chelsea"], 0.05, 1), _pair(imgs["coffee"], 0.2, 2),
             (rand, np.clip(rand + rng.normal(0, 0.2, rand.shape), 0, 1))]
    for x, y in cases:
        xv, yv = _to_video(x), _to_video(y)
        ref_s = pm.ssim(yv[0], xv[0], data_range=1.0, size_average=False).item()
        ref_m = pm.ms_ssim(yv[0], xv[0], data_range=1.0, size_average=False).item()
        assert ssim(yv, xv).item() == pytest.approx(ref_s, abs=TOL)
        assert ms_ssim(yv, xv).item() == pytest.approx(ref_m, abs=TOL)


def test_identical_videos_give_one():
    x = _to_video(_real_images()["chelsea"], _real_images()["chelsea"][::-1].copy())
    assert torch.allclose(ssim(x, x), torch.ones(1, 2), atol=1e-6)
    assert torch.allclose(ms_ssim(x, x), torch.ones(1, 2), atol=1e-6)
    assert torch.allclose(SSIM()(x, x), torch.ones(1, 2), atol=1e-6)
    assert torch.allclose(MSSSIM()(x, x), torch.ones(1, 2), atol=1e-6)


def test_ms_ssim_refuses_frames_too_small_for_five_scales():
    x = torch.rand(1, 2, 3, 128, 256)
    with pytest.raises(DataFormatError, match="128x256 are too small") as err:
        ms_ssim(x, x)
    assert "161" in err.value.hint and "win_size" in err.value.hint
    # A smaller window is accepted when asked for explicitly.
    assert ms_ssim(x, x, win_size=7).shape == (1, 2)
    with pytest.raises(DataFormatError, match="too small"):
        ssim(torch.rand(1, 1, 1, 8, 8), torch.rand(1, 1, 1, 8, 8))


def test_three_scale_ms_ssim_is_defined_on_small_frames_and_matches_pytorch_msssim():
    from vpcli.metrics import MS_SSIM3_WEIGHTS, get_metric
    assert sum(MS_SSIM3_WEIGHTS) == pytest.approx(1.0)
    assert MS_SSIM3_WEIGHTS[1] / MS_SSIM3_WEIGHTS[0] == pytest.approx(0.2856 / 0.0448)
    x, y = _pair(_real_images()["astronaut"][100:164, 150:278], 0.1, 3)      # 64x128
    xv, yv = _to_video(x), _to_video(y)
    with pytest.raises(DataFormatError, match="too small"):
        get_metric("ms-ssim")()(yv, xv)
    got = get_metric("ms-ssim-3")()(yv, xv).item()
    assert got == pytest.approx(ms_ssim(yv, xv, weights=MS_SSIM3_WEIGHTS).item(), abs=1e-7)
    assert 0.2 < got < 0.99 and get_metric("ms-ssim-3")()(xv, xv).item() == pytest.approx(1.0, abs=1e-6)
    try:
        import pytorch_msssim as pm
    except ImportError:
        missing_reference("pytorch-msssim is not installed: run scripts/install-test-deps.sh")
    # pytorch_msssim refuses frames under 161 px whatever its weights: compare on a larger pair
    xb, yb = (_to_video(a) for a in _pair(_real_images()["coffee"], 0.1, 4))
    ref = pm.ms_ssim(yb[0], xb[0], data_range=1.0, size_average=False, weights=list(MS_SSIM3_WEIGHTS)).item()
    assert get_metric("ms-ssim-3")()(yb, xb).item() == pytest.approx(ref, abs=TOL)


def test_ssim_nan_and_shape_errors():
    x = torch.rand(1, 2, 3, 16, 16)
    y = x.clone()
    y[0, 1, 1, 2, 2] = float("inf")
    with pytest.raises(DataFormatError, match=r"target holds NaN or Inf in frame \(b=0, t=1\)"):
        ssim(x, y)
    with pytest.raises(DataFormatError, match=r"pred \(1, 2, 3, 16, 16\) vs target \(1, 2, 3, 16, 17\)"):
        ssim(x, torch.rand(1, 2, 3, 16, 17))
