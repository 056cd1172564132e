"""FVD: the Fréchet distance against scipy and closed forms, I3D structure, preprocessing,
identical sets with a seeded random I3D, shot-wise FVD, and the small-sample errors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from vpcli.errors import DataFormatError, WeightsError
from vpcli.metrics import FVD, SmallSampleWarning
from vpcli.metrics.fvd import (
    frechet_distance,
    fvd,
    fvd_from_features,
    gaussian_stats,
    preprocess_i3d,
    resize_frames,
    shotwise_fvd,
)
from vpcli.metrics.i3d import (
    InceptionI3d,
    MaxPool3dSame,
    Unit3D,
    convert_pytorch_i3d_state_dict,
)


def _random_spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


# --- Fréchet distance ------------------------------------------------------------------------

def test_frechet_distance_matches_scipy_sqrtm_on_random_spd_matrices():
    rng = np.random.default_rng(0)
    for d in (1, 5, 40):
        s1, s2 = _random_spd(d, rng), _random_spd(d, rng)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2)))
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9, abs=1e-9)
        assert frechet_distance(mu1, s1, mu2, s2, method="sqrtm") == pytest.approx(ref, rel=1e-9, abs=1e-9)
        assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ref, rel=1e-9, abs=1e-9)  # symmetric


def test_frechet_distance_closed_forms():
    # Diagonal (commuting) covariances: ||mu1 - mu2||^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([3.0, 1.0, 0.0])
    expected = 9 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 0.5) ** 2
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # Same covariance, rotated frame: only the means matter.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    s = q @ np.diag(rng.uniform(0.5, 2, 6)) @ q.T
    assert frechet_distance(np.zeros(6), s, np.ones(6), s) == pytest.approx(6.0, rel=1e-9)
    # Isotropic 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s.
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-1.0]), np.array([[9.0]])) == pytest.approx(5.0)


def test_identical_feature_sets_give_zero_even_when_rank_deficient():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(5, 400))  # 5 videos, 400-d: covariance of rank 4
    with pytest.warns(SmallSampleWarning):
        assert fvd_from_features(feats, feats) == pytest.approx(0.0, abs=1e-8)
    mu, sigma = gaussian_stats(feats)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False))  # unbiased (N - 1)
    np.testing.assert_allclose(mu, feats.mean(0))


def test_too_few_videos_is_a_clear_error():
    with pytest.raises(DataFormatError, match="at least 2 videos per set; got pred=1, target=3") as err:
        fvd_from_features(np.zeros((1, 4)), np.zeros((3, 4)))
    assert "256" in err.value.hint
    metric = FVD(model=_PixelStub())
    with pytest.raises(DataFormatError, match="target has 1"):
        metric(torch.rand(3, 9, 3, 8, 8), torch.rand(1, 9, 3, 8, 8))
    with pytest.raises(DataFormatError, match="at least 9 frames; got 8"):
        metric(torch.rand(3, 8, 3, 8, 8), torch.rand(3, 8, 3, 8, 8))


# --- preprocessing and I3D ---------------------------------------------------------------------

def test_tf1_bilinear_resize_samples_like_tensorflow_1():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    # TF1 resize_bilinear(align_corners=False): output i samples input i * 2 / 4 = 0, .5, 1, 1.5 (clamped).
    row = torch.tensor([0.0, 0.5, 1.0, 1.0])
    expected = row.view(1, 4) + 2 * row.view(4, 1)
    torch.testing.assert_close(resize_frames(x, 4, "tf1")[0, 0], expected)
    y = torch.rand(2, 3, 17, 30)
    torch.testing.assert_close(resize_frames(y, 224, "torch"),
                               F.interpolate(y, size=(224, 224), mode="bilinear", align_corners=False))
    video = torch.rand(2, 9, 1, 16, 20)  # grey: repeated to RGB; output B,3,T,224,224 in [-1, 1]
    out = preprocess_i3d(video)
    assert out.shape == (2, 3, 9, 224, 224)
    assert out.min() >= -1 and out.max() <= 1
    torch.testing.assert_close(out[:, 0], out[:, 2])


def test_same_padding_units_match_tensorflow_output_sizes():
    torch.manual_seed(0)
    unit = Unit3D(2, 4, (7, 7, 7), (2, 2, 2)).eval()
    x = torch.randn(1, 2, 10, 13, 16)
    y = unit(x)
    assert y.shape[2:] == (5, 7, 8)  # ceil(size / 2)
    # Even size, stride 2, kernel 7: TF pads 2 before and 3 after.
    even = x[:, :, :, :12]  # 10 x 12 x 16
    manual = F.relu(unit.bn(unit.conv3d(F.pad(even, (2, 3, 2, 3, 2, 3)))))
    torch.testing.assert_close(unit(even), manual)
    pool = MaxPool3dSame((3, 3, 3), (2, 2, 2))
    assert pool(torch.rand(1, 1, 9, 14, 15)).shape[2:] == (5, 7, 8)


@pytest.mark.parametrize("kernel,stride", [((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2)),
                                           ((3, 3, 3), (1, 1, 1))])
def test_separable_max_pool_equals_padded_max_pool3d(kernel, stride):
    # The port's MaxPool3dSamePadding: zero 'SAME' padding, then nn.MaxPool3d.
    for shape in [(2, 3, 8, 14, 15), (1, 2, 5, 7, 7)]:
        x = torch.rand(shape)
        pads = []
        for size, k, s in zip(shape[2:], kernel, stride):
            total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
            pads.append((total // 2, total - total // 2))
        (tf, tb), (hf, hb), (wf, wb) = pads
        ref = F.max_pool3d(F.pad(x, (wf, wb, hf, hb, tf, tb)), kernel, stride)
        assert torch.equal(MaxPool3dSame(kernel, stride)(x), ref)


def test_i3d_parameter_names_follow_pytorch_i3d():
    with torch.device("meta"):
        state = InceptionI3d().state_dict()
    for key, shape in [("Conv3d_1a_7x7.conv3d.weight", (64, 3, 7, 7, 7)), ("Conv3d_2c_3x3.bn.running_var", (192,)),
                       ("Mixed_3b.b1b.conv3d.weight", (128, 96, 3, 3, 3)), ("Mixed_4f.b3b.bn.weight", (128,)),
                       ("Mixed_5c.b0.conv3d.weight", (384, 832, 1, 1, 1)), ("logits.conv3d.weight", (400, 1024, 1, 1, 1)),
                       ("logits.conv3d.bias", (400,))]:
        assert tuple(state[key].shape) == shape
    assert not any(k.startswith("logits.bn") for k in state)
    assert not any("conv3d.bias" in k for k in state if not k.startswith("logits"))
    real = InceptionI3d().state_dict()
    converted = convert_pytorch_i3d_state_dict({"module." + k: v for k, v in real.items()})
    assert set(converted) == set(real)
    del real["Mixed_4b.b0.conv3d.weight"]
    with pytest.raises(WeightsError, match="1 missing"):
        convert_pytorch_i3d_state_dict(real)


def test_missing_i3d_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the entry is fetched implicitly when online
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match="i3d-kinetics400") as err:
        fvd(torch.rand(2, 16, 3, 8, 8), torch.rand(2, 16, 3, 8, 8))
    assert err.value.hint == "FVD needs the Kinetics-400 I3D: vpcli weights download i3d-kinetics400"


def test_center_crop_resize_is_the_short_side_and_centre_protocol():
    """resize="center-crop": the StyleGAN-V-derived ports' preprocessing (shorter side to 224 with
    torch bilinear, the longer one rounded up, then the centre); a different FVD protocol."""
    x = torch.rand(2, 3, 48, 80, generator=torch.Generator().manual_seed(0))
    out = resize_frames(x, 224, "center-crop")
    wide = F.interpolate(x, size=(224, 374), mode="bilinear", align_corners=False)  # ceil(80 * 224 / 48) = 374
    torch.testing.assert_close(out, wide[..., :, 75:299])
    tall = resize_frames(x.transpose(-1, -2), 224, "center-crop")
    assert tall.shape == (2, 3, 224, 224)
    metric = FVD(model=InceptionI3d(), resize="center-crop")
    assert metric.protocol["name"] == "custom" and "center-crop" in metric.protocol["resize"]
    assert FVD(model=InceptionI3d()).protocol["resize"] == "tf1-bilinear-224"


def test_random_i3d_identical_sets_give_zero_and_different_sets_do_not():
    # One I3D pass over 4 short clips (I3D is slow on CPU): 2 noise videos, 2 ramps.
    metric = FVD(model=InceptionI3d().random_init_(0), batch_size=4)
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(2, 10, 3, 32, 32, generator=g)
    ramps = torch.linspace(0, 1, 32).view(1, 1, 1, 1, 32).repeat(2, 10, 3, 32, 1)
    ramps[1] = ramps[1].flip(-1)
    feats = metric.features(torch.cat([noise, ramps]))
    assert feats.shape == (4, 400) and feats.dtype == torch.float64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        assert fvd_from_features(feats[:2], feats[:2].clone()) == pytest.approx(0.0, abs=1e-6)
        assert fvd_from_features(feats[2:], feats[2:].clone()) == pytest.approx(0.0, abs=1e-6)
        assert fvd_from_features(feats[:2], feats[2:]) > 1.0


def test_fvd_call_on_identical_sets_is_zero_and_warns_below_the_recommended_size():
    metric = FVD(model=_PixelStub())
    x = torch.rand(3, 9, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with pytest.warns(SmallSampleWarning, match="3 videos"):
        assert metric(x, x.clone()) == pytest.approx(0.0, abs=1e-9)
    with pytest.warns(SmallSampleWarning):
        shuffled = metric(x, x.flip(0).clone())
    assert shuffled == pytest.approx(0.0, abs=1e-9)  # a set: order does not matter
    with pytest.warns(SmallSampleWarning):
        different = metric(x, 1 - x)
    assert different > 0


# --- shot-wise FVD -----------------------------------------------------------------------------

class _PixelStub(nn.Module):
    """A cheap stand-in for I3D: 2 features per clip from the top-left pixel of channel 0.

    TF1 resizing keeps the top-left pixel, so the features are known without running the model.
    """

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # N,3,T,224,224 in [-1, 1]
        v = x[:, 0, :, 0, 0]  # N,T
        return torch.stack([v.mean(dim=1), v[:, 0]], dim=1)


def _expected_shotwise(pred: torch.Tensor, target: torch.Tensor, window: int) -> list[float]:
    def feats(clips):  # independent of vpcli: numpy
        v = 2 * clips[:, :, 0, 0, 0].double().numpy() - 1
        return np.stack([v.mean(axis=1), v[:, 0]], axis=1)

    def fd(a, b):
        m1, m2 = a.mean(0), b.mean(0)
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        return float(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2))))

    real = np.concatenate([feats(target[:, s:s + window]) for s in range(target.shape[1] - window + 1)])
    return [fd(feats(pred[:, t:t + window]), real) for t in range(pred.shape[1] - window + 1)]


def test_shotwise_fvd_follows_the_hvp_protocol():
    g = torch.Generator().manual_seed(3)
    pred = torch.rand(4, 13, 3, 6, 6, generator=g)  # M=4 predictions, 13 steps
    target = torch.rand(3, 11, 3, 6, 6, generator=g)  # 3 real videos -> 3 * 3 shots of 9 frames
    with pytest.warns(SmallSampleWarning):
        starts, values = shotwise_fvd(pred, target, window=9, metric=FVD(model=_PixelStub(), batch_size=1))
    np.testing.assert_array_equal(starts, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(values, _expected_shotwise(pred, target, 9), rtol=1e-7, atol=1e-9)
    # Several windows per I3D batch give the same numbers; stride subsamples the start steps.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        s2, v2 = FVD(model=_PixelStub(), batch_size=64).shotwise(pred, target, window=9, stride=2)
    np.testing.assert_array_equal(s2, [0, 2, 4])
    np.testing.assert_allclose(v2, values[::2], rtol=1e-9)
    with pytest.raises(DataFormatError, match="fewer than the 16-frame window"):
        shotwise_fvd(pred, target, window=16, metric=FVD(model=_PixelStub()))


def test_i3d_weights_load_from_a_pytorch_i3d_file(tmp_path):
    source = InceptionI3d().random_init_(7)
    torch.save(source.state_dict(), tmp_path / "rgb_imagenet.pt")
    metric = FVD(tmp_path / "rgb_imagenet.pt")
    loaded = metric.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())
    assert not metric.model.training and not any(p.requires_grad for p in metric.model.parameters())
