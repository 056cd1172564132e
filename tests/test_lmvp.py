"""LMVP (vpcli/predictors/lmvp.py) and the dynamic filter layer (vpcli/nn/dynamic_filter.py).

The layer against an independent per-pixel loop; normalised filters; training lowers the
reconstruction loss; every step of both stages moves exactly the parameters Algorithm 1 says
(and leaves no gradient on the fixed ones); gamma = 0 removes the teacher term; deterministic
predict; inference checkpoints without D's head; `vpcli train` then `vpcli predict` end to end.
Tiny models, one thread, seconds.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vpcli import registry
from vpcli.engine.run import resolve_config
from vpcli.errors import InputError
from vpcli.nn.dynamic_filter import DynamicFilter, dynamic_filter
from vpcli.predictors.base import check_record
from vpcli.predictors.lmvp import LMVP, LMVPConfig, filter_flow, gradient_difference_loss
from vpcli.trainable import IterationCache, TrainState

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

TINY = dict(channels=1, context=4, clip=3, kernel_size=5, feature_dim=4, extractor_width=4, head_width=4,
            guider_hidden=4, gen_width=4, motion_width=4)


def tiny(**kw) -> LMVP:
    torch.manual_seed(0)
    return LMVP(LMVPConfig(**{**TINY, **kw}))


def digits(n=4, context=4, future=3, size=32, seed=0) -> torch.Tensor:
    from vpcli.data.clips import make_dataset
    ds = make_dataset("synthetic:moving-digits", split="train", context=context, future=future, size=(size, size),
                      channels=1, num_clips=n, seed=seed)
    return torch.stack([ds[i]["rgb"] for i in range(n)])          # (n, T, 1, H, W)


def fresh_state(model, stage="main") -> TrainState:
    return TrainState(stage=stage, cache=IterationCache(model.cache_keys))


# ----------------------------------------------------------------------------- the dynamic filter layer


def naive_dynamic_filter(x, filters, padding):
    """out[b, c, i, j] = sum_{u, v} K[b, (c,) u*k + v, i, j] * x[b, c, i + u - r, j + v - r], pixel by pixel."""
    b, c, h, w = x.shape
    per_channel = filters.dim() == 5
    k = math.isqrt(filters.shape[-3])
    r = k // 2
    out = torch.zeros_like(x)

    def pixel(bb, cc, i, j):
        if padding == "replicate":
            return x[bb, cc, min(max(i, 0), h - 1), min(max(j, 0), w - 1)]
        if 0 <= i < h and 0 <= j < w:
            return x[bb, cc, i, j]
        return x.new_zeros(())
    for bb in range(b):
        for cc in range(c):
            for i in range(h):
                for j in range(w):
                    acc = x.new_zeros(())
                    for u in range(k):
                        for v in range(k):
                            f = filters[bb, cc, u * k + v, i, j] if per_channel else filters[bb, u * k + v, i, j]
                            acc = acc + f * pixel(bb, cc, i + u - r, j + v - r)
                    out[bb, cc, i, j] = acc
    return out


@pytest.mark.parametrize("k, padding, per_channel", [(3, "replicate", False), (5, "zeros", False),
                                                     (3, "replicate", True), (1, "zeros", False)])
def test_dynamic_filter_equals_a_per_pixel_loop(k, padding, per_channel):
    g = torch.Generator().manual_seed(k)
    x = torch.rand(2, 3, 5, 7, generator=g, dtype=torch.float64)
    shape = (2, 3, k * k, 5, 7) if per_channel else (2, k * k, 5, 7)
    filters = torch.randn(*shape, generator=g, dtype=torch.float64)      # any values: the layer is linear
    torch.testing.assert_close(dynamic_filter(x, filters, padding), naive_dynamic_filter(x, filters, padding))


def test_dynamic_filter_taps_read_the_documented_offsets():
    x = torch.arange(2 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    k, r = 3, 1
    for u in range(k):
        for v in range(k):
            one_hot = torch.zeros(2, k * k, 6, 6)
            one_hot[:, u * k + v] = 1
            out = dynamic_filter(x, one_hot, "zeros")
            # interior pixels: tap (u, v) reads pixel (i + u - r, j + v - r)
            assert torch.equal(out[..., 1:-1, 1:-1], x[..., 1 + u - r:5 + u - r, 1 + v - r:5 + v - r])
    centre = torch.zeros(2, k * k, 6, 6)
    centre[:, k * k // 2] = 1
    assert torch.equal(dynamic_filter(x, centre), x)                       # identity filter = copy


def test_dynamic_filter_softmax_makes_normalised_filters_and_a_convex_combination():
    layer = DynamicFilter(5)
    x = torch.rand(3, 2, 8, 8)
    out, filters = layer(x, 10 * torch.randn(3, 25, 8, 8))
    assert filters.shape == (3, 25, 8, 8) and (filters >= 0).all()
    torch.testing.assert_close(filters.sum(1), torch.ones(3, 8, 8))
    assert out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6
    with pytest.raises(ValueError, match="expected 25 filter taps"):
        layer(x, torch.randn(3, 9, 8, 8))
    with pytest.raises(ValueError, match="odd"):
        DynamicFilter(4)
    # the generator's filters are normalised too, and its frames stay in [0, 1]
    m = tiny()
    frame, filt = m.generator(torch.rand(2, 1, 16, 16), torch.randn(2, 4, 2, 2))
    torch.testing.assert_close(filt.sum(1), torch.ones(2, 16, 16))
    assert 0 <= frame.min() and frame.max() <= 1


def test_filter_flow_is_the_mean_tap_offset():
    k = 5
    f = torch.zeros(1, k * k, 4, 4)
    f[:, 1 * k + 4] = 1                                                    # row -1, column +2
    torch.testing.assert_close(filter_flow(f)[0, :, 0, 0], torch.tensor([2.0, -1.0]))  # (u, v)


def test_gradient_difference_loss():
    x = torch.rand(2, 1, 8, 8)
    assert float(gradient_difference_loss(x, x)) == 0
    assert float(gradient_difference_loss(x + 0.3, x)) == pytest.approx(0, abs=1e-6)  # a shift keeps the gradients
    assert float(gradient_difference_loss(torch.zeros_like(x), x)) > 0


# ----------------------------------------------------------------------------- training


def test_training_lowers_the_reconstruction_loss(tmp_path):
    from vpcli.data.clips import make_dataset
    from vpcli.engine.trainer import OptimConfig, TrainConfig, Trainer
    ds = make_dataset("synthetic:moving-digits", split="train", context=4, future=3, size=(32, 32), channels=1,
                      num_clips=8, seed=0)
    torch.manual_seed(0)
    model = LMVP(LMVPConfig(**{**TINY, "feature_dim": 8, "gen_width": 8, "motion_width": 8, "guider_hidden": 8}))
    x = torch.stack([ds[i]["rgb"] for i in range(8)])
    before = model.validate({"rgb": x}, fresh_state(model))["bce"]
    cfg = TrainConfig(steps=40, batch_size=8, optim=OptimConfig(lr=5e-3), log_every=1,
                      stage_steps={"pretrain": 40, "main": 40}, per_step={"d": {"optim": {"lr": 1e-3}}})
    Trainer(model, ds, cfg, tmp_path, context_frames=4).fit()
    after = model.validate({"rgb": x}, fresh_state(model))["bce"]
    assert after < 0.9 * before, (before, after)   # measured: 0.159 -> 0.136
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in logs if r["event"] == "train"]
    joint = [r["joint/recon"] for r in logs if r["stage"] == "pretrain"]
    g = [r["g/recon"] for r in logs if r["stage"] == "main"]
    assert len(joint) == 40 and len(g) == 40
    assert np.mean(g[-5:]) < np.mean(joint[:5])
    assert all(k in logs[-1] for k in ("d/loss", "m/loss", "g/teacher", "g/gdl"))


MODULES = ("extractor", "disc_head", "guider", "generator")
# Algorithm 1 / App. A: what each step updates. Its backward leaves gradients on exactly these
# modules too: in g, eq. 3 goes through F to G's frame without touching F's parameters, and M's
# guidance is an input; in m, F's features are inputs; in d, the fakes carry no gradient.
MOVES = {("pretrain", "d"): {"extractor", "disc_head"}, ("pretrain", "joint"): {"generator", "guider", "extractor"},
         ("main", "d"): {"extractor", "disc_head"}, ("main", "m"): {"guider"}, ("main", "g"): {"generator"}}


def test_each_step_moves_exactly_its_parameters_and_leaves_the_fixed_ones_alone():
    model = tiny(gamma=0.5)
    x = digits()
    plan = model.training_plan()
    assert [(st.name, [s.name for s in st.steps]) for st in plan] == [("pretrain", ["d", "joint"]),
                                                                      ("main", ["d", "m", "g"])]
    for st in plan:
        model.set_frozen(st.frozen)
        state = fresh_state(model, st.name)
        for s in st.steps:
            before = {k: v.clone() for k, v in model.state_dict().items()}
            opt = torch.optim.Adam(s.params(), lr=1e-2)
            model.zero_grad(set_to_none=True)
            losses = s.loss({"rgb": x}, state)
            losses["loss"].backward()
            with_grad = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None}
            assert with_grad == MOVES[(st.name, s.name)], (st.name, s.name, with_grad)
            opt.step()
            moved = {m for m in MODULES if any(not torch.equal(before[k], v) for k, v in model.state_dict().items()
                                               if k.startswith(m + "."))}
            assert moved == MOVES[(st.name, s.name)], (st.name, s.name, moved)
            # every parameter of the step's modules moved (none is dead), nothing else did
            own = {id(p) for p in s.params()}
            for n, p in model.named_parameters():
                if id(p) in own:
                    assert not torch.equal(before[n], p.detach()), (s.name, n)
    model.zero_grad(set_to_none=True)


def test_the_g_step_reads_the_real_features_step_m_left_in_the_cache():
    model = tiny(gamma=0.5)
    x = digits()
    state = fresh_state(model)
    model.m_loss({"rgb": x}, state)
    assert "real_features" in state.cache
    feats = state.cache.get("real_features")
    assert feats.shape == (4, 7 - 2, 4, 4, 4) and not feats.requires_grad   # windows ending at frames 2..6
    with_cache = model.g_loss({"rgb": x}, state)
    without = model.g_loss({"rgb": x}, fresh_state(model))
    for k in with_cache:
        torch.testing.assert_close(with_cache[k], without[k])


def test_gamma_zero_removes_the_teacher_term_from_the_generator_loss():
    x = digits()
    on, off = tiny(gamma=0.5), tiny(gamma=0.0)
    off.load_state_dict(on.state_dict())
    a, b = on.g_loss({"rgb": x}, fresh_state(on)), off.g_loss({"rgb": x}, fresh_state(off))
    torch.testing.assert_close(a["recon"], b["recon"])
    torch.testing.assert_close(a["teacher"], b["teacher"])             # the same rollout, the same L_M^T value
    assert float(b["teacher"]) > 0
    # eq. 4: gamma = 0 leaves exactly L_rec + w * L_gdl; gamma > 0 adds gamma * L_M^T
    assert torch.equal(b["loss"], b["recon"] + off.config.gdl_weight * b["gdl"])
    torch.testing.assert_close(a["loss"], a["recon"] + on.config.gdl_weight * a["gdl"] + 0.5 * a["teacher"])
    grads = []
    for m, losses in ((on, a), (off, b)):
        m.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.generator.parameters()]))
    assert not torch.allclose(grads[0], grads[1])                      # the teacher term moves G
    # pretraining's joint step never uses the teacher term (App. A: gamma = 0)
    j = on.joint_loss({"rgb": x}, fresh_state(on, "pretrain"))
    assert torch.equal(j["loss"], j["recon"] + on.config.gdl_weight * j["gdl"])


# ----------------------------------------------------------------------------- inference


def test_predict_is_deterministic_with_horizon_records_of_the_right_shape():
    model = tiny().eval()
    ctx = {"rgb": digits(n=2)[:, :4]}
    assert LMVP.deterministic is True
    recs = list(model.predict(ctx, 5, samples=3, generator=torch.Generator().manual_seed(1)))
    assert len(recs) == 5
    for t, r in enumerate(recs):
        check_record(r, model, t, batch=2, samples=3, size=(32, 32), channels=1, want_extras=False)
        assert torch.equal(r.frames[:, 0], r.frames[:, 1]) and torch.equal(r.frames[:, 0], r.frames[:, 2])
        assert 0 <= r.frames.min() and r.frames.max() <= 1
    again = list(model.predict(ctx, 5, samples=1, generator=torch.Generator().manual_seed(9), want_extras=True))
    for r, s in zip(recs, again):
        assert torch.equal(r.frames[:, :1], s.frames)                 # seed, S and extras change nothing
        assert s.extras["filter_flow"].shape == (2, 1, 2, 32, 32)
    # predict is the training rollout
    with torch.no_grad():
        ref = [p for p, _, _ in model._steps(ctx["rgb"], 5)]
    for r, p in zip(recs, ref):
        assert torch.equal(r.frames[:, 0], p.clamp(0, 1))
    # a context shorter than a window is padded with its first frame; horizon 0 yields nothing
    assert len(list(model.predict({"rgb": ctx["rgb"][:, :1]}, 2))) == 2
    assert list(model.predict(ctx, 0)) == []


def test_inference_checkpoint_has_no_discriminator_head_and_reloads_to_the_same_predictions(tmp_path):
    from vpcli.engine.trainer import load_weights, save_weights
    model = tiny().eval()
    save_weights(model, tmp_path / "w.safetensors")
    keys = set(load_file(tmp_path / "w.safetensors"))
    assert keys and not any(k.startswith("disc_head.") for k in keys)
    assert {k.split(".")[0] for k in keys} == {"generator", "guider", "extractor"}
    fresh = LMVP(LMVPConfig(**TINY))   # other random init
    load_weights(fresh, tmp_path / "w.safetensors")
    fresh.eval()
    ctx = {"rgb": digits(n=2)[:, :4]}
    for a, b in zip(model.predict(ctx, 4, 2), fresh.predict(ctx, 4, 2)):
        assert torch.equal(a.frames, b.frames)
    save_weights(model, tmp_path / "g.safetensors", parts=["generator"])
    assert all(k.startswith("generator.") for k in load_file(tmp_path / "g.safetensors"))


def test_config_and_input_errors_are_clear():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        LMVPConfig(kernel_size=4)
    with pytest.raises(ValueError, match="recon must be bce or mse"):
        LMVPConfig(recon="l1")
    with pytest.raises(ValueError, match="gamma and gdl_weight must be >= 0"):
        LMVPConfig(gamma=-1)
    m = tiny()
    with pytest.raises(InputError, match="divisible by 8"):
        list(m.predict({"rgb": torch.rand(1, 4, 1, 30, 32)}, 1))
    with pytest.raises(InputError, match=r"expects rgb \(B, T, 1, H, W\)"):
        list(m.predict({"rgb": torch.rand(1, 4, 3, 32, 32)}, 1))
    with pytest.raises(InputError, match="longer than the context"):
        m.g_loss({"rgb": torch.rand(1, 4, 1, 32, 32)}, fresh_state(m))


@pytest.mark.parametrize("name", ["lmvp-mmnist", "lmvp-mmnist-cpu", "lmvp-mmnist-tiny", "lmvp-street-cpu"])
def test_presets_build_and_fit_the_bundle_size(name):
    cfg = resolve_config(None, name)
    mcfg = cfg.model_config()
    assert mcfg.context == cfg.data.context and mcfg.channels == cfg.data.channels
    assert set(cfg.train.stage_steps) == {"pretrain", "main"}
    model = registry.get("predictor", "lmvp").builder(mcfg).eval()
    inference = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("disc_head."))
    assert inference * 2 <= 8 * 2**20                                   # <= 8 MB as fp16
    if name != "lmvp-mmnist":
        x = torch.rand(1, cfg.data.context, cfg.data.channels, *cfg.data.size)
        (r,) = model.predict({"rgb": x}, 1, samples=2)
        assert r.frames.shape == (1, 2, cfg.data.channels, *cfg.data.size)
    street = resolve_config(None, "lmvp-street-cpu")
    assert (street.data.context, street.data.future, tuple(street.data.size), street.model_config().recon) == \
        (3, 3, (64, 64), "mse")
    digits_cfg = resolve_config(None, "lmvp-mmnist")
    assert (digits_cfg.data.context, digits_cfg.data.future, digits_cfg.model_config().recon) == (10, 10, "bce")


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def digit_clip(tmp_path):
    from vpcli.io.video import write_video
    x = digits(n=1, context=4, future=2)[0, :, 0]                       # (6, 32, 32)
    frames = np.repeat((x.numpy() * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
    return write_video(tmp_path / "clip.mkv", frames, fps=5, lossless=True)


def cli(capsys, *args):
    from vpcli.cli.app import main
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_cli_train_then_predict(capsys, tmp_path, digit_clip):
    from vpcli.io.video import read_video
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--config", "lmvp-mmnist-tiny", "--set", "train.stage_steps.pretrain=2",
                       "--set", "train.stage_steps.main=2", "--set", "train.val_every=2", "--out", run)
    assert code == 0, err
    assert json.loads((run / "stages.json").read_text())["completed"] == ["pretrain", "main"]
    assert not any(k.startswith("disc_head.") for k in load_file(run / "checkpoints/last.safetensors"))
    code, out, err = cli(capsys, "predict", digit_clip, "--weights", run, "--horizon", 3, "--lossless",
                         "--out", tmp_path / "p", "--json")
    assert code == 0, err
    rec = json.loads(out.splitlines()[-1])
    assert rec["ok"] and rec["frames"] == 3 and rec["method"] == "lmvp"
    got = read_video(tmp_path / "p" / "clip" / "sample_000.mp4")[0]
    assert got.shape == (3, 32, 32, 3)


def test_cli_predict_with_samples_says_once_that_lmvp_is_deterministic(capsys, tmp_path, digit_clip):
    run = tmp_path / "run"
    assert cli(capsys, "train", "--config", "lmvp-mmnist-tiny", "--set", "train.stage_steps.pretrain=1",
               "--set", "train.stage_steps.main=1", "--set", "train.val_every=0", "--out", run)[0] == 0
    code, _, err = cli(capsys, "predict", digit_clip, "--weights", run, "--horizon", 2, "--samples", 3,
                         "--out", tmp_path / "p", "--json")
    assert code == 0, err
    assert err.count("deterministic") == 1
    assert sorted(p.name for p in (tmp_path / "p" / "clip").glob("sample_*.mp4")) == ["sample_000.mp4"]


@pytest.mark.parametrize("name,data,metric", [("lmvp-movingdigits", "synthetic:moving-digits", "bce"),
                                              ("lmvp-synthstreet", "synthetic:synth-street", "mse")])
def test_bundled_models_beat_copy_last_on_held_out_sequences(tmp_path, name, data, metric):
    """The bundled checkpoints load through the manifest (sha256-checked) and, on a few held-out test
    sequences, predict better than repeating the last frame (lower BCE / MSE, higher PSNR)."""
    from vpcli.engine.evaluate import evaluate
    r = evaluate(weights=name, data=data, metric=f"{metric},psnr", samples=1, num_sequences=8, batch_size=8,
                 out=tmp_path / "m", videos=False, plots=False)
    c = r["inputs"]
    base = evaluate(method="copy-last", data=data, context=c["context"], horizon=c["horizon"],
                    size="x".join(map(str, c["size"])), metric=f"{metric},psnr", samples=1, num_sequences=8,
                    batch_size=8, out=tmp_path / "c", videos=False, plots=False)
    assert r["metrics"][metric]["mean"] < base["metrics"][metric]["mean"]
    assert r["metrics"]["psnr"]["mean"] > base["metrics"]["psnr"]["mean"] + 0.5
