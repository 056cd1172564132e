"""SLAMP and SLAMP-Baseline: equations (against a plain per-step reference), the predict contract,
training, presets and the checkpoint converter. Tiny seeded models; the whole file runs in seconds."""
from __future__ import annotations

import gc
import math

import pytest
import torch
from torch.nn import functional as F

from vpcli import registry
from vpcli.engine.run import list_presets, resolve_config
from vpcli.errors import InputError
from vpcli.nn.gaussian_lstm import gaussian_kl
from vpcli.nn.warp import backward_warp, warp_border
from vpcli.predictors.base import TrainState
from vpcli.predictors.slamp import (
    SLAMP,
    SLAMPBaseline,
    SLAMPBaselineConfig,
    SLAMPConfig,
)
from vpcli.weights.convert_slamp import convert_slamp_official

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


TINY = {"nf": 8, "rnn_size": 16, "mask_channels": 8}
SIZES = {"dcgan64": (64, 64), "vgg64": (64, 64), "cityscapes": (64, 64), "kitti": (92, 310)}


def frames_of(records) -> list[torch.Tensor]:
    """The frames of a predictor's step records (the Predictor contract yields StepRecords)."""
    return [r.frames for r in records]


def lively(model):
    """Weights with gain: a freshly initialised model (N(0, 0.02), or even PyTorch's fan-in init)
    changes its frames by ~1e-6 when its latents change, which would make every comparison
    between samples (or against the reference) vacuous. Three times PyTorch's init: ~0.3."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.LSTMCell)):
                mod.reset_parameters()
                for name, p in mod.named_parameters():
                    if "weight" in name:
                        p.mul_(3.0)
    return model


def tiny_slamp(backbone="dcgan64", channels=1, context=3, seed=0, **kw) -> SLAMP:
    torch.manual_seed(seed)
    return SLAMP(SLAMPConfig(backbone=backbone, channels=channels, context=context, g_dim_app=8, g_dim_motion=8,
                             z_dim_app=3, z_dim_motion=2, **{**TINY, **kw}))


def tiny_baseline(backbone="dcgan64", channels=1, context=3, seed=0, **kw) -> SLAMPBaseline:
    torch.manual_seed(seed)
    return SLAMPBaseline(SLAMPBaselineConfig(backbone=backbone, channels=channels, context=context, g_dim=8,
                                             z_dim=3, **{**TINY, **kw}))


def clip(b=2, t=6, c=1, size=(64, 64), seed=1):
    return torch.rand(b, t, c, *size, generator=torch.Generator().manual_seed(seed))


def keyed_noise(kind: str, t: int, shape) -> torch.Tensor:
    """Deterministic N(0, 1) per (latent, step): the same tensor whoever asks for it."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(1000 * t + (kind == "motion")))


def keyed_noise64(kind: str, t: int, shape) -> torch.Tensor:
    return keyed_noise(kind, t, shape).double()


# --------------------------------------------------------------------------- plain references

def ref_warp(img, flow):
    """out[y, x] = img(x + u, y + v), bilinear, 0 where the footprint leaves the image."""
    b, _, h, w = img.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=img.dtype), torch.arange(w, dtype=img.dtype), indexing="ij")
    sx = xx + flow[:, 0]                                          # source x, pixels
    sy = yy + flow[:, 1]
    grid = torch.stack([2 * sx / (w - 1) - 1, 2 * sy / (h - 1) - 1], -1)
    out = F.grid_sample(img, grid, align_corners=True)
    inside = F.grid_sample(torch.ones(b, 1, h, w, dtype=img.dtype), grid, align_corners=True)
    return out * (inside >= 0.9999).float()


def ref_rnn(mod, x, state):
    """One step of a predictor / Gaussian LSTM from its sub-layers; state: list of (h, c) or None."""
    conv = hasattr(mod.lstm[0], "gates")
    inp = x if (conv and not hasattr(mod, "output")) else mod.embed(x)  # gaussian conv LSTM: no embedding
    new = []
    for i, cell in enumerate(mod.lstm):
        prev = None if state is None else state[i]
        if conv:
            inp, hc = cell(inp, prev)
        else:
            hc = cell(inp, prev)
            inp = hc[0]
        new.append(hc)
    if hasattr(mod, "output"):
        return mod.output(inp), new
    return (mod.mu_net(inp), mod.logvar_net(inp)), new


def ref_kl(mu1, lv1, mu2, lv2):
    s1, s2 = torch.exp(lv1 / 2), torch.exp(lv2 / 2)
    return (torch.log(s2 / s1) + (s1 ** 2 + (mu1 - mu2) ** 2) / (2 * s2 ** 2) - 0.5).sum()


def ref_encode(m, x):
    """-> (appearance features, skips, motion-encoder input) as the authors' get_model_* wire it."""
    if m.street:
        f, skips = m.img_encoder(x)
        return m.pixel_encoder(f), skips, f
    h, skips = m.pixel_encoder(x)
    return h, skips, x


def ref_motion(m, a, b):
    out = m.motion_encoder(torch.cat([a, b], 1))
    return out if m.street else out[0]


def ref_decode(m, g_app, g_flow, skips, x_in):
    size = x_in.shape[-2:]
    xp = m.pixel_decoder(g_app, skips, size) if m.street else m.pixel_decoder(g_app, skips)
    fl = m.flow_decoder(g_flow, skips, size) if m.street else m.flow_decoder(g_flow, skips)
    xf = ref_warp(x_in, fl).clamp(0, 1)                            # Sec. 3.2: warp x_{t-1}
    mask = m.mask_decoder(torch.cat([xp, xf], 1))
    return xp, xf, mask * xp + (1 - mask) * xf                     # Eq. 1


def reference_slamp(m, x, horizon, samples, noise, train=False):
    """SLAMP step by step from Sec. 3.2-3.4 (helpers.train_step / eval_step), one sample at a time.

    ``train``: posterior latents at every step over the whole clip ``x`` and the Eq. 3 loss;
    else: posterior over the context, prior for ``horizon`` frames, returns (horizon, B, S, C, H, W).
    """
    b, t0 = x.shape[:2]
    n = x.shape[1] if train else t0 + horizon
    outs, losses = [], None
    for s in range(1 if train else samples):
        st = {k: None for k in ("pa", "qa", "pm", "qm", "static", "dynamic")}
        pick = (lambda e: e) if train else (lambda e, s=s: e[:, s])
        shape = (lambda mu: (b, *mu.shape[1:])) if train else (lambda mu: (b, samples, *mu.shape[1:]))
        x_in, frames, avg = x[:, 0], [], None
        last_motion = ref_motion(m, ref_encode(m, x[:, 0])[2], ref_encode(m, x[:, 0])[2])  # zero motion
        mse_p = mse_f = mse = kl = 0.0
        for i in range(1, n):
            h, skip, mi = ref_encode(m, x_in)
            avg = skip if i == 1 else [(a * (i - 1) + sk) / i for a, sk in zip(avg, skip)]   # running mean
            (mu_pa, lv_pa), st["pa"] = ref_rnn(m.prior_app, h, st["pa"])                     # p(z^p | x_{1:t-1})
            (mu_pm, lv_pm), st["pm"] = ref_rnn(m.prior_motion, last_motion, st["pm"])        # Eq. 5
            if train or i < t0:
                h_t, _, m_t = ref_encode(m, x[:, i])
                h_motion = ref_motion(m, mi, m_t)                                            # Eq. 4
                (mu_a, lv_a), st["qa"] = ref_rnn(m.posterior_app, h_t, st["qa"])
                (mu_m, lv_m), st["qm"] = ref_rnn(m.posterior_motion, h_motion, st["qm"])
            else:
                mu_a, lv_a, mu_m, lv_m = mu_pa, lv_pa, mu_pm, lv_pm
            z_a = mu_a + torch.exp(0.5 * lv_a) * pick(noise("app", i, shape(mu_a)))
            z_m = mu_m + torch.exp(0.5 * lv_m) * pick(noise("motion", i, shape(mu_m)))
            g_a, st["static"] = ref_rnn(m.static_frame_predictor, torch.cat([h, z_a], 1), st["static"])
            g_m, st["dynamic"] = ref_rnn(m.dynamic_frame_predictor, torch.cat([last_motion, z_m], 1), st["dynamic"])
            if train:
                xp, xf, xh = ref_decode(m, g_a, g_m, avg, x_in)
                mse_p, mse_f, mse = (mse_p + F.mse_loss(xp, x[:, i]), mse_f + F.mse_loss(xf, x[:, i]),
                                     mse + F.mse_loss(xh, x[:, i]))
                kl = kl + (ref_kl(mu_a, lv_a, mu_pa, lv_pa) + ref_kl(mu_m, lv_m, mu_pm, lv_pm)) / b
                x_in, last_motion = x[:, i], h_motion
            elif i < t0:
                x_in, last_motion = x[:, i], h_motion
            else:
                _, _, xh = ref_decode(m, g_a, g_m, avg, x_in)
                frames.append(xh)
                last_motion = ref_motion(m, mi, ref_encode(m, xh)[2])
                x_in = xh
        if train:
            losses = {"loss": mse_p + mse_f + mse + m.config.beta * kl, "mse": mse / (n - 1), "kl": kl / (n - 1)}
        else:
            outs.append(torch.stack(frames))                       # (horizon, B, C, H, W)
    return losses if train else torch.stack(outs, 2)               # (horizon, B, S, C, H, W)


def reference_baseline(m, x, horizon, samples, noise):
    """SLAMP-Baseline (App. A Fig. 11-12): SVG-LP whose g_t feeds pixel, flow and mask decoders."""
    b, t0 = x.shape[:2]
    outs = []
    for s in range(samples):
        sq = sp = sf = None
        x_in, avg, frames = x[:, 0], None, []
        for i in range(1, t0 + horizon):
            h, skip, _ = ref_encode(m, x_in)
            avg = skip if i == 1 else [(a * (i - 1) + sk) / i for a, sk in zip(avg, skip)]
            (mu, lv), sp = ref_rnn(m.prior, h, sp)
            if i < t0:
                (mu, lv), sq = ref_rnn(m.posterior, ref_encode(m, x[:, i])[0], sq)
            z = mu + torch.exp(0.5 * lv) * noise("app", i, (b, samples, *mu.shape[1:]))[:, s]
            g, sf = ref_rnn(m.frame_predictor, torch.cat([h, z], 1), sf)
            if i < t0:
                x_in = x[:, i]
            else:
                x_in = ref_decode(m, g, g, avg, x_in)[2]
                frames.append(x_in)
        outs.append(torch.stack(frames))
    return torch.stack(outs, 2)


# --------------------------------------------------------------------------- warping

def test_backward_warp_shifts_by_whole_pixels_and_zeroes_outside():
    img = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    flow = torch.zeros(2, 2, 5, 7)
    flow[:, 0] = 1.0                                   # read one pixel to the right
    out = backward_warp(img, flow)
    assert torch.allclose(out[..., :-1], img[..., 1:], atol=1e-4)
    assert torch.all(out[..., -1] == 0)                # the footprint leaves the image: zero
    flow = torch.zeros(2, 2, 5, 7)
    flow[:, 1] = -2.0                                  # read two rows up
    out = backward_warp(img, flow)
    assert torch.allclose(out[..., 2:, :], img[..., :-2, :], atol=1e-4) and torch.all(out[..., :2, :] == 0)


def test_backward_warp_is_bilinear_and_differentiable():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 1, 6, 6, generator=g)
    flow = torch.zeros(1, 2, 6, 6)
    flow[:, 0], flow[:, 1] = 0.25, 0.5
    flow.requires_grad_(True)
    out = backward_warp(img, flow)
    y, x = 2, 3                                        # interior: (3.25, 2.5) by hand
    want = (0.75 * 0.5 * img[0, 0, 2, 3] + 0.25 * 0.5 * img[0, 0, 2, 4]
            + 0.75 * 0.5 * img[0, 0, 3, 3] + 0.25 * 0.5 * img[0, 0, 3, 4])
    assert torch.isclose(out[0, 0, y, x], want, atol=1e-5)
    out.sum().backward()
    assert flow.grad is not None and flow.grad.abs().sum() > 0


# --------------------------------------------------------------------------- equations

@pytest.mark.parametrize("backbone,channels", [("dcgan64", 1), ("vgg64", 3), ("cityscapes", 3)])
def test_predict_matches_the_step_by_step_reference(backbone, channels):
    # float64: batching S samples changes float32 rounding, which the (deliberately sensitive)
    # weights amplify to ~1e-5; in float64 any real difference stands out of ~1e-13 noise.
    m = lively(tiny_slamp(backbone, channels)).eval().double()
    x = clip(2, 3, channels, SIZES[backbone]).double()
    ours = torch.stack(frames_of(m.predict({"rgb": x}, 3, samples=2, noise=keyed_noise64)))  # (H, B, S, C, H, W)
    with torch.no_grad():
        ref = reference_slamp(m, x, 3, 2, keyed_noise64)
    assert ours.shape == ref.shape == (3, 2, 2, channels, *SIZES[backbone])
    assert torch.allclose(ours, ref, rtol=0, atol=1e-10), (ours - ref).abs().max()
    assert (ours[:, :, 0] - ours[:, :, 1]).abs().max() > 1e-3    # the noise matters: a real comparison


def test_baseline_predict_matches_the_reference():
    m = lively(tiny_baseline()).eval().double()
    x = clip(2, 3).double()
    ours = torch.stack(frames_of(m.predict({"rgb": x}, 3, samples=3, noise=keyed_noise64)))
    with torch.no_grad():
        ref = reference_baseline(m, x, 3, 3, keyed_noise64)
    assert torch.allclose(ours, ref, rtol=0, atol=1e-10), (ours - ref).abs().max()
    assert (ours[:, :, 0] - ours[:, :, 1]).abs().max() > 1e-3


@pytest.mark.parametrize("backbone", ["dcgan64", "cityscapes"])
def test_training_loss_matches_eq3_reference(backbone):
    m = lively(tiny_slamp(backbone, beta=0.3)).train().double()  # a large beta so the KL term matters
    x = clip(2, 5, 1, SIZES[backbone]).double()
    ours = m.loss({"rgb": x}, TrainState(), noise=keyed_noise64)
    ref = reference_slamp(m, x, 0, 1, keyed_noise64, train=True)
    for key in ("loss", "mse", "kl"):
        assert torch.allclose(ours[key], ref[key], rtol=1e-10, atol=0), (key, ours[key], ref[key])


def test_skip_connections_running_mean_and_freeze():
    m = tiny_slamp(context=3)
    a, b, c = [torch.full((1,), v) for v in (1.0, 2.0, 6.0)]
    avg = m._update_skips(None, [a], 1, 3)
    avg = m._update_skips(avg, [b], 2, 3)
    assert float(avg[0]) == 1.5                                 # App. C.2: mean of the skips so far
    assert float(m._update_skips(avg, [c], 3, 3)[0]) == 3.0     # generated frames count too
    m.config.last_frame_skip = False                            # SVG: frozen after the context
    assert float(m._update_skips(avg, [c], 3, 3)[0]) == 1.5
    m.config.last_frame_skip, m.config.running_avg = True, False
    assert float(m._update_skips(avg, [c], 3, 3)[0]) == 6.0     # the last frame's skips only


def test_motion_skip_option_feeds_the_motion_encoders_skips_to_the_flow_decoder():
    a = lively(tiny_slamp(motion_skip=True)).eval()
    b = tiny_slamp(motion_skip=False).eval()
    b.load_state_dict(a.state_dict())
    x = clip(1, 3)
    pa = next(a.predict({"rgb": x}, 1, noise=keyed_noise)).frames
    pb = next(b.predict({"rgb": x}, 1, noise=keyed_noise)).frames
    assert not torch.allclose(pa, pb)


# --------------------------------------------------------------------------- predict contract

@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("make", [tiny_slamp, tiny_baseline])
def test_predict_yields_horizon_frames_in_range(make, channels):
    m = make(channels=channels).eval()
    steps = frames_of(m.predict({"rgb": clip(2, 3, channels)}, 4, samples=3, generator=torch.Generator().manual_seed(0)))
    assert len(steps) == 4
    for s in steps:
        assert s.shape == (2, 3, channels, 64, 64)
        assert s.min() >= 0 and s.max() <= 1 and torch.isfinite(s).all()


def test_street_backbones_predict_at_their_paper_sizes():
    for backbone in ("kitti",):                        # cityscapes runs in the reference test above
        m = tiny_slamp(backbone, 3, context=2).eval()
        (x,) = frames_of(m.predict({"rgb": clip(1, 2, 3, SIZES[backbone])}, 1, samples=2))
        assert x.shape == (1, 2, 3, 92, 310)


def test_context_is_encoded_once_whatever_the_sample_count():
    m = tiny_slamp().eval()
    calls = {"pixel_encoder": [], "motion_encoder": []}
    for name, seen in calls.items():
        getattr(m, name).register_forward_hook(lambda mod, inp, out, seen=seen: seen.append(inp[0].shape[0]))
    b, t0, horizon = 2, 3, 4
    for samples in (1, 5):
        for v in calls.values():
            v.clear()
        list(m.predict({"rgb": clip(b, t0)}, horizon, samples=samples))
        # each context frame once at batch B; every generated frame but the last once at B*S
        assert calls["pixel_encoder"].count(b) == t0 + (horizon - 1 if samples == 1 else 0)
        assert calls["motion_encoder"].count(b) == t0 + (horizon - 1 if samples == 1 else 0)  # zero motion + pairs
        if samples > 1:
            assert calls["pixel_encoder"].count(b * samples) == horizon - 1
    m.rows_per_pass = 4                   # two blocks of 2 samples: the context is still encoded once
    for v in calls.values():
        v.clear()
    list(m.predict({"rgb": clip(b, t0)}, horizon, samples=4))
    assert calls["pixel_encoder"].count(b) == t0 and calls["pixel_encoder"].count(4) == 2 * (horizon - 1)


def test_samples_differ_and_a_seed_repeats_them():
    m = lively(tiny_slamp()).eval()
    ctx = {"rgb": clip(1, 3)}

    def run(seed):
        return torch.stack(frames_of(m.predict(ctx, 3, samples=3, generator=torch.Generator().manual_seed(seed))))
    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3                       # another seed, other samples
    assert (a[-1, 0, 0] - a[-1, 0, 1]).abs().max() > 1e-3   # two samples of one clip differ


@pytest.mark.parametrize("make,batchnorm", [(tiny_slamp, "eval"), (tiny_slamp, "batch-per-sample"),
                                            (tiny_baseline, "eval")])
def test_sample_blocks_give_the_frames_and_draws_of_one_batch(make, batchnorm):
    """predict runs many samples as blocks of at most rows_per_pass rows, in lockstep: the same
    generator draws (every sample's, in one order) and the same frames as one batch of B*S. In
    float64: in float32 batch statistics over 2 clips amplify the rounding of other batch sizes."""
    m = lively(make(batchnorm=batchnorm)).eval().double()
    ctx = {"rgb": clip(2, 3).double()}

    def run(rows, **kw):
        m.rows_per_pass = rows
        recs = list(m.predict(ctx, 4, samples=5, want_extras=True, **kw))
        return torch.stack(frames_of(recs)), recs
    one, one_recs = run(1000, generator=torch.Generator().manual_seed(3))
    for rows in (2, 4, 7):            # 1, 2 and 3 samples a block (2 clips): 5, 3 and 2 blocks
        blocks, recs = run(rows, generator=torch.Generator().manual_seed(3))
        assert blocks.shape == one.shape == (4, 2, 5, 1, 64, 64)
        assert (blocks - one).abs().max() < 1e-12
        for a, b in zip(recs, one_recs):
            assert a.extras.keys() == b.extras.keys()
            for k in a.extras:
                assert (a.extras[k] - b.extras[k]).abs().max() < 1e-12
    assert (one[-1, 0, 0] - one[-1, 0, 4]).abs().max() > 1e-3   # the samples are not all alike
    keyed = run(3, noise=keyed_noise64)[0]
    assert (keyed - run(1000, noise=keyed_noise64)[0]).abs().max() < 1e-12


def test_sample_blocks_split_samples_evenly_within_the_row_budget():
    m = tiny_slamp()
    m.rows_per_pass = 32
    assert m.sample_blocks(8, 100, (64, 64)) == [(i, i + 4) for i in range(0, 100, 4)]
    assert m.sample_blocks(20, 100, (64, 64)) == [(i, i + 1) for i in range(100)]   # never splits clips
    assert m.sample_blocks(2, 5, (64, 64)) == [(0, 5)]
    m.config.batchnorm = "batch-per-sample"             # 8+ clips: one sample a block (native BatchNorm)
    assert m.sample_blocks(8, 3, (64, 64)) == [(0, 1), (1, 2), (2, 3)]
    assert m.sample_blocks(2, 5, (64, 64)) == [(0, 5)]
    m.config.batchnorm = "eval"
    m.rows_per_pass = None                              # ROW_PIXELS // (H * W) rows: 32 at 64x64
    assert m.sample_blocks(1, 100, (64, 64)) == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert m.sample_blocks(1, 4, (480, 640)) == [(0, 1), (1, 2), (2, 3), (3, 4)]


def _tensor_bytes(obj, seen=None) -> int:
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v, seen) for v in obj)
    return 0


def _live_tensors() -> int:
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def test_a_long_horizon_keeps_no_history():
    m = tiny_slamp().eval()
    gen = m.predict({"rgb": clip(1, 3)}, 200, samples=2, generator=torch.Generator().manual_seed(0))
    held, live = {}, {}
    for k, _ in enumerate(gen):
        if k in (20, 199):
            gc.collect()
            held[k], live[k] = _tensor_bytes(dict(gen.gi_frame.f_locals)), _live_tensors()
    assert held[199] == held[20], held                 # the generator's own state does not grow
    assert live[199] <= live[20] + 5, live             # nor does anything else it allocates


# --------------------------------------------------------------------------- training

def test_scheduled_sampling_feeds_predictions_back():
    m = tiny_slamp(context=2).train()
    calls = []
    m.pixel_encoder.register_forward_hook(lambda *a: calls.append(1))
    x = clip(2, 5)
    torch.manual_seed(0)
    m.loss({"rgb": x}, TrainState(teacher_forcing=1.0))
    teacher = len(calls)
    calls.clear()
    out = m.loss({"rgb": x}, TrainState(teacher_forcing=0.0))  # always the model's own frames
    assert teacher == 5 and len(calls) == 5 + 2                # 2 steps past the context re-encode
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


@pytest.mark.parametrize("method", ["slamp", "slamp-baseline"])
def test_training_lowers_the_loss(tmp_path, method):
    from vpcli.data.clips import make_dataset
    from vpcli.engine.trainer import OptimConfig, TrainConfig, Trainer
    torch.manual_seed(0)
    model = tiny_slamp(context=2) if method == "slamp" else tiny_baseline(context=2)
    data = make_dataset("synthetic:moving-digits", split="train", context=2, future=2, size=(64, 64), channels=1,
                        seed=0, num_clips=32)
    cfg = TrainConfig(steps=30, batch_size=4, optim=OptimConfig(lr=3e-3), log_every=1, seed=0)
    seen = []
    Trainer(model, data, cfg, tmp_path, context_frames=2,
            callback=lambda e, r: seen.append(r["loss"]) if e == "train" else None).fit()
    assert len(seen) == 30 and all(math.isfinite(v) for v in seen)
    assert sum(seen[-5:]) / 5 < 0.5 * sum(seen[:5]) / 5, seen


# --------------------------------------------------------------------------- configs and presets

SLAMP_PRESETS = [p for p in list_presets() if p.startswith("slamp")]


def test_every_paper_dataset_has_a_preset():
    for name in ("mmnist", "kth", "bair", "kitti", "cityscapes", "baseline-mmnist", "mmnist-tiny",
                 "baseline-mmnist-tiny"):
        assert f"slamp-{name}" in SLAMP_PRESETS


@pytest.mark.parametrize("name", SLAMP_PRESETS)
def test_presets_load_and_build(name):
    cfg = resolve_config(None, name)
    mcfg = cfg.model_config()
    entry = registry.get("predictor", cfg.method)
    assert mcfg.channels == cfg.data.channels and mcfg.context == cfg.data.context
    if name.endswith("-tiny") or name.endswith("-cpu"):   # small enough to run
        model = entry.builder(mcfg).eval()
        x = torch.rand(1, cfg.data.context, cfg.data.channels, *cfg.data.size)
        (y,) = frames_of(model.predict({"rgb": x}, 1, samples=2))
        assert y.shape == (1, 2, cfg.data.channels, *cfg.data.size)
    else:
        with torch.device("meta"):                     # paper-size: shapes only, no memory
            model = entry.builder(mcfg)
        assert sum(p.numel() for p in model.parameters()) > 1e7


def test_paper_hyperparameters_in_presets():
    mm, kth = resolve_config(None, "slamp-mmnist"), resolve_config(None, "slamp-kth")
    assert (mm.train.batch_size, mm.train.optim.lr, mm.model_config().beta) == (32, 3e-4, 1e-4)  # App. C.3
    assert (kth.train.batch_size, kth.train.optim.lr, kth.model_config().beta) == (20, 1e-4, 1e-6)
    assert kth.train.scheduled_sampling_k > 0 and mm.train.scheduled_sampling_k == 0
    assert resolve_config(None, "slamp-cityscapes").data.size == (128, 256)


def _kl_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 4, 5, generator=g).mul_(0.5).requires_grad_() for _ in range(4)]


def test_free_bits_zero_is_the_papers_kl():
    m = tiny_slamp()
    mu_q, lv_q, mu_p, lv_p = _kl_inputs()
    assert torch.allclose(m._kl(mu_q, lv_q, mu_p, lv_p), ref_kl(mu_q, lv_q, mu_p, lv_p).sum())


def test_free_bits_above_every_channel_equals_the_plain_kl_value_and_gradients():
    mu_q, lv_q, mu_p, lv_p = _kl_inputs()
    plain = tiny_slamp()._kl(mu_q, lv_q, mu_p, lv_p)
    want = torch.autograd.grad(plain, [mu_q, lv_q, mu_p, lv_p])
    m = tiny_slamp(free_bits=1e-6)  # far below each channel's mean KL
    freed = m._kl(mu_q, lv_q, mu_p, lv_p)
    got = torch.autograd.grad(freed, [mu_q, lv_q, mu_p, lv_p])
    assert torch.allclose(freed, plain)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want))


def test_free_bits_below_the_threshold_frees_the_posterior_and_still_trains_the_prior():
    mu_q, lv_q, mu_p, lv_p = _kl_inputs()
    kl = gaussian_kl(mu_q, lv_q, mu_p, lv_p).detach()
    lam = float(kl.mean(dim=(0, 2, 3)).max()) + 1.0  # above every channel
    value = tiny_slamp(free_bits=lam)._kl(mu_q, lv_q, mu_p, lv_p)
    assert torch.allclose(value, torch.tensor(lam * kl.numel()))
    want_p = torch.autograd.grad(kl_sum := gaussian_kl(mu_q.detach(), lv_q.detach(), mu_p, lv_p).sum(), [mu_p, lv_p])
    assert kl_sum > 0
    g_mu_q, g_lv_q, g_mu_p, g_lv_p = torch.autograd.grad(value, [mu_q, lv_q, mu_p, lv_p])
    assert g_mu_q.abs().max() == 0 and g_lv_q.abs().max() == 0   # the posterior pays nothing
    assert torch.allclose(g_mu_p, want_p[0]) and torch.allclose(g_lv_p, want_p[1])  # the prior keeps following it
    with pytest.raises(ValueError, match="free_bits"):
        SLAMPConfig(free_bits=-1.0)


def test_free_bits_reach_the_training_loss():
    x = clip(b=2, t=5)
    losses = []
    for fb in (0.0, 5.0):
        m = tiny_slamp(free_bits=fb).train()
        torch.manual_seed(0)
        losses.append(m.loss({"rgb": x}, TrainState())["kl"])
    assert losses[1] > losses[0]  # the floor lifts the reported KL of a fresh model


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_warp_padding_decides_what_the_motion_branch_reads_outside_the_frame(padding):
    m = lively(tiny_slamp("cityscapes", 3, warp_padding=padding)).eval()
    x = clip(1, 3, 3, (64, 64))
    rec = next(iter(m.predict({"rgb": x}, 1, samples=1, noise=keyed_noise, want_extras=True)))
    flow, warped = rec.extras["flow"][:, 0], rec.extras["warped"][:, 0]
    last = x[:, -1]
    ring = torch.zeros(64, 64, dtype=torch.bool)
    ring[0], ring[-1], ring[:, 0], ring[:, -1] = True, True, True, True
    # the lively model's flow points out of the frame somewhere on the rim: the case that differs
    zeroed = backward_warp(last, flow)
    leaves = (zeroed.sum(1)[0] == 0) & ring
    assert leaves.any()
    want = (warp_border(last, flow) if padding == "border" else zeroed).clamp(0, 1)
    assert torch.allclose(warped, want, atol=1e-6)
    if padding == "border":   # edge pixels continue the frame instead of turning black
        assert (warped.sum(1)[0][leaves] > 0).all()
    with pytest.raises(ValueError, match="warp_padding"):
        SLAMPConfig(warp_padding="reflect")


def test_config_and_input_errors_are_clear():
    with pytest.raises(ValueError, match="channels"):
        SLAMPConfig(channels=2)
    with pytest.raises(ValueError, match="g_dim_app == g_dim_motion"):
        SLAMPConfig(backbone="kitti", g_dim_app=64, g_dim_motion=32)
    with pytest.raises(ValueError, match="motion_skip"):
        SLAMPConfig(backbone="cityscapes", g_dim_app=64, g_dim_motion=64, motion_skip=True)
    m = tiny_slamp().eval()
    with pytest.raises(InputError, match="64x64"):
        next(m.predict({"rgb": torch.rand(1, 3, 1, 32, 32)}, 1))
    with pytest.raises(InputError, match="expects rgb"):
        m.loss({"rgb": torch.rand(1, 3, 3, 64, 64)}, TrainState())


# --------------------------------------------------------------------------- checkpoints

def _bn(prefix, c):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def authors_dcgan_layout(nc=1, g=128, z=20, rnn=256, nf=64):
    """Keys and shapes of a kaanakan/slamp MNIST checkpoint's state dicts, written out from
    models/dcgan_64.py, models/lstm.py and models/mask_predictor.py (the `.main` wrappers kept)."""
    def encoder(cin):
        out, widths = {}, [cin, nf, nf * 2, nf * 4, nf * 8]
        for k in range(4):
            out[f"c{k + 1}.main.0.weight"] = (widths[k + 1], widths[k], 4, 4)
            out.update(_bn(f"c{k + 1}.main.1", widths[k + 1]))
        out["c5.0.weight"] = (g, nf * 8, 4, 4)
        out.update(_bn("c5.1", g))
        return out

    def decoder(cout):
        out = {"upc1.0.weight": (g, nf * 8, 4, 4), **_bn("upc1.1", nf * 8)}
        for k, (cin, co) in enumerate([(nf * 16, nf * 4), (nf * 8, nf * 2), (nf * 4, nf)], start=2):
            out[f"upc{k}.main.0.weight"] = (cin, co, 4, 4)
            out.update(_bn(f"upc{k}.main.1", co))
        out.update({"upc5.0.weight": (nf * 2, cout, 4, 4), "upc5.0.bias": (cout,)})
        return out

    def lstm(cin, cout, layers, gaussian):
        out = {"embed.weight": (rnn, cin), "embed.bias": (rnn,)}
        for i in range(layers):
            out.update({f"lstm.{i}.weight_ih": (4 * rnn, rnn), f"lstm.{i}.weight_hh": (4 * rnn, rnn),
                        f"lstm.{i}.bias_ih": (4 * rnn,), f"lstm.{i}.bias_hh": (4 * rnn,)})
        heads = ("mu_net", "logvar_net") if gaussian else ("output.0",)
        for h in heads:
            out.update({f"{h}.weight": (cout, rnn), f"{h}.bias": (cout,)})
        return out

    mask = {}
    for blk, cin in (("c1", 2 * nc), ("c2", 64)):
        for j, ci in enumerate((cin, 64)):
            mask[f"{blk}.{j}.main.0.weight"] = (64, ci, 3, 3)
            mask.update(_bn(f"{blk}.{j}.main.1", 64))
        mask.update({f"{blk}.2.fc.0.weight": (4, 64), f"{blk}.2.fc.2.weight": (64, 4)})
    mask.update({"c3.0.weight": (1, 64, 3, 3), "c3.0.bias": (1,)})
    return {"pixel_encoder": encoder(nc), "motion_encoder": encoder(2 * nc), "pixel_decoder": decoder(nc),
            "flow_decoder": decoder(2), "mask_decoder": mask,
            "static_frame_predictor": lstm(g + z, g, 2, False), "dynamic_frame_predictor": lstm(g + z, g, 2, False),
            "posterior_app": lstm(g, z, 1, True), "prior_app": lstm(g, z, 1, True),
            "posterior_motion": lstm(g, z, 1, True), "prior_motion": lstm(g, z, 1, True)}


def test_convert_an_authors_mnist_checkpoint_layout(tmp_path):
    g = torch.Generator().manual_seed(0)
    layout = authors_dcgan_layout()
    src = {comp: {k: torch.randn(shape, generator=g) if shape else torch.tensor(7) for k, shape in sd.items()}
           for comp, sd in layout.items()}
    src["opt"], src["epoch"] = {"dataset": "smmnist"}, 120       # train.py saves these next to the models
    with torch.device("meta"):
        model = SLAMP(resolve_config(None, "slamp-mmnist").model_config())
    ours = convert_slamp_official(src, model=model)              # names and shapes checked against the model
    assert len(ours) == sum(len(v) for v in layout.values()) == len(model.state_dict())
    assert torch.equal(ours["pixel_encoder.c1.0.weight"], src["pixel_encoder"]["c1.main.0.weight"])
    assert torch.equal(ours["mask_decoder.c2.2.fc.2.weight"], src["mask_decoder"]["c2.2.fc.2.weight"])
    assert torch.equal(ours["static_frame_predictor.lstm.1.weight_hh"],
                       src["static_frame_predictor"]["lstm.1.weight_hh"])
    # the same from a file of state dicts, read with weights_only=True
    path = tmp_path / "slamp_mnist.sd.pth"
    torch.save({k: v for k, v in src.items() if k != "opt"}, path)
    again = convert_slamp_official(path)
    assert again.keys() == ours.keys() and all(torch.equal(again[k], ours[k]) for k in ours)


def test_convert_street_checkpoint_renames_conv_lstm_cells_and_drops_unused_embed():
    model = tiny_slamp("cityscapes", 3)
    own = model.state_dict()
    # the authors' layout: `conv` wrappers -> `.layers.`, ConvLSTM cell conv -> `.conv.`, and an
    # (unused) `embed` conv in each Gaussian ConvLSTM
    src: dict = {}
    for key, value in own.items():
        comp, rest = key.split(".", 1)
        parts = rest.split(".")
        if comp in ("img_encoder", "pixel_encoder", "motion_encoder", "pixel_decoder", "flow_decoder") \
                and len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit():
            rest = ".".join([parts[0], parts[1], "layers", parts[2], parts[3]])
        rest = rest.replace(".gates.", ".conv.")
        src.setdefault(comp, {})[rest] = value.clone()
    for comp in ("posterior_app", "prior_app", "posterior_motion", "prior_motion"):
        src[comp]["embed.weight"] = torch.zeros(16, 8, 3, 3)
        src[comp]["embed.bias"] = torch.zeros(16)
    assert "img_encoder.c1.0.layers.0.weight" in {f"{c}.{k}" for c, sd in src.items() for k in sd}
    out = convert_slamp_official(src, model=model)
    assert out.keys() == own.keys() and all(torch.equal(out[k], own[k]) for k in own)
    fresh = tiny_slamp("cityscapes", 3, seed=5)
    fresh.load_state_dict(out)
    x = clip(1, 2, 3)
    a = next(model.eval().predict({"rgb": x}, 1, noise=keyed_noise)).frames
    b = next(fresh.eval().predict({"rgb": x}, 1, noise=keyed_noise)).frames
    assert torch.equal(a, b)


def test_convert_refuses_whole_module_pickles_and_unknown_components(tmp_path):
    path = tmp_path / "slamp_mnist.pth"
    torch.save({"pixel_encoder": torch.nn.Linear(2, 2), "epoch": 3}, path)  # what train.py writes
    with pytest.raises(InputError, match="pickles whole modules"):
        convert_slamp_official(path)
    with pytest.raises(InputError, match="unknown SLAMP component"):
        convert_slamp_official({"decoder": {"w": torch.zeros(1)}})
    with pytest.raises(InputError, match="do not fit"):
        convert_slamp_official({"pixel_encoder": {"c1.main.0.weight": torch.zeros(1)}}, model=tiny_slamp())
