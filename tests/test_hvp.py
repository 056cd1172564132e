"""HVP (vpcli/predictors/hvp.py): the structure generator against Tables B-E and eq. 1 (analytic
cases: KL of identical posterior and prior, NLL of a uniform decoder), argmax discretisation and
the skips at inference, the image generator's eq. 3 against hand-made flows and masks, the flow
inversion, training lowering each stage's loss, one-part checkpoints refused with the missing part,
export of two side-by-side runs as one file, `vpcli predict` end to end. Tiny models, one thread.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from stage_util import fresh_state, train_stage
from test_predict import run
from safetensors.torch import load_file

from vpcli.errors import InputError
from vpcli.nn.warp import invert_flow, warp_border
from vpcli.predictors.hvp import HVP, HVPConfig, one_hot

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

TINY = dict(num_classes=5, context=3, stages=[[1, 8], [1, 16]], g_dim=8, z_dim=4, rnn_size=8, tau=2,
            gen_width=4, downsample=1, res_blocks=1, disc_width=4, disc_layers=2)


def tiny(**kw) -> HVP:
    torch.manual_seed(0)
    return HVP(HVPConfig(**{**TINY, **kw}))


def squares(b=2, t=6, size=16, k=5, seed=0):
    """Labels: a square of class 1 + (i mod (k-1)) moving right one pixel per frame over class 0;
    rgb: the class id as grey level; forward flow: +1 px in x on the square."""
    g = torch.Generator().manual_seed(seed)
    lab = torch.zeros(b, t, size, size, dtype=torch.long)
    flow = torch.zeros(b, t - 1, 2, size, size)
    for i in range(b):
        x, y = torch.randint(1, size - 4 - t, (2,), generator=g).tolist()
        for j in range(t):
            lab[i, j, y:y + 4, x + j:x + j + 4] = 1 + i % (k - 1)
            if j < t - 1:
                flow[i, j, 0, y:y + 4, x + j:x + j + 4] = 1.0
    rgb = (lab.float() / (k - 1))[:, :, None].expand(-1, -1, 3, -1, -1).contiguous()
    return {"rgb": rgb, "labels": lab, "flow": flow}


state = fresh_state


# ----------------------------------------------------------------------------- structure generator


def test_paper_structure_generator_has_the_tables_shapes():
    """Tables B-E at 64x64: h, z, g of 128x8x8; skips 64@64, 128@32, 256@16; log-softmax over N."""
    torch.manual_seed(0)
    cfg = HVPConfig(num_classes=19)
    sg = HVP(cfg).structure
    convs = [m for m in sg.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 128]       # Table B
    dec = [m for m in sg.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in dec] == [256, 256, 128, 128, 64, 64, 19]              # Table E
    assert [c.in_channels for c in dec][::3][:1] == [128 + 256]                            # cat(g3, h3)
    lab = torch.randint(0, 19, (2, 64, 64))
    h, skips = sg.encode(lab)
    assert h.shape == (2, 128, 8, 8)
    assert [tuple(s.shape[1:]) for s in skips] == [(64, 64, 64), (128, 32, 32), (256, 16, 16)]
    mu, lv, _ = sg.prior(h)
    assert mu.shape == lv.shape == (2, 128, 8, 8)                                          # Table C
    g, _ = sg.predictor(torch.cat([h, mu], 1))
    assert g.shape == (2, 128, 8, 8) and len(sg.predictor.lstm) == 2 and (g >= 0).all()    # Table D
    logp = sg.decoder(g, skips)
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(2, 64, 64))
    # one more stage per doubling keeps the 8x8 maps (App. C.1)
    deep = HVP(HVPConfig(num_classes=19, stages=[[2, 64], [2, 128], [3, 256], [3, 512]])).structure
    assert deep.encode(torch.zeros(1, 128, 128, dtype=torch.long))[0].shape == (1, 128, 8, 8)


def test_kl_is_zero_when_posterior_and_prior_agree_and_nll_starts_at_log_k():
    m = tiny()
    sg = m.structure
    sg.prior.load_state_dict(sg.posterior.state_dict())
    static = squares(t=5)["labels"][:, :1].expand(-1, 5, -1, -1).contiguous()   # h_t == h_{t-1}
    out = sg.loss(static, context=3)
    assert float(out["kld"].detach()) == pytest.approx(0.0, abs=1e-5)
    # N(0, 0.02) weights: the decoder starts near uniform, NLL ~ (T-1) ln K (summed over time)
    fresh = tiny().structure.loss(squares(t=5)["labels"], context=3)
    assert float(fresh["nll"]) == pytest.approx(4 * math.log(5), rel=0.02)
    assert float(fresh["loss"]) == pytest.approx(float(fresh["nll"] + 5e-4 * fresh["kld"]), rel=1e-6)


def test_ignore_label_is_a_zero_one_hot_and_unscored():
    lab = torch.tensor([[[0, 255], [2, 1]]])
    oh = one_hot(lab, 3)
    assert oh[0, :, 0, 1].sum() == 0 and oh[0, 2, 1, 0] == 1
    m = tiny()
    batch = squares(t=4)
    a = m.structure.loss(batch["labels"], 3)
    torch.manual_seed(0)
    ignored = batch["labels"].clone()
    ignored[:, 1:, :2] = 255
    b = m.structure.loss(ignored, 3)
    assert torch.isfinite(b["loss"]) and float(a["nll"]) != float(b["nll"])


def test_a_frame_of_only_ignore_labels_adds_nothing_instead_of_nan():
    m = tiny()
    lab = squares(t=4)["labels"]
    lab[:, 2] = 255
    out = m.structure.loss(lab, 3)
    assert torch.isfinite(out["loss"]) and float(out["nll"]) > 0


def test_labels_outside_the_classes_are_refused():
    m = tiny()
    batch = squares(t=4)
    batch["labels"][0, 0, 0, 0] = 7
    with pytest.raises(InputError, match=r"class ids \[7\] outside this model's 5 classes"):
        m._structure_loss(batch, state(m, "structure"))
    with pytest.raises(InputError, match="outside this model's 5 classes"):
        next(m.eval().predict({"rgb": batch["rgb"][:, :3], "labels": batch["labels"][:, :3]}, 2))


def _recording(monkeypatch, module, attr):
    calls = []
    fn = getattr(module, attr)

    def wrapped(*a, **k):
        calls.append(a)
        return fn(*a, **k)
    monkeypatch.setattr(module, attr, wrapped)
    return calls


@pytest.mark.parametrize("skip", ["last-context", "previous"])
def test_predict_feeds_back_the_argmax_one_hot_and_takes_the_configured_skip(monkeypatch, skip):
    m = tiny(skip=skip).eval()
    batch = squares(t=3)
    ctx = {"rgb": batch["rgb"], "labels": batch["labels"]}
    encoded = _recording(monkeypatch, m.structure, "encode")
    decoded = _recording(monkeypatch, m.structure.decoder, "forward")
    records = list(m.predict(ctx, 4, 2, torch.Generator().manual_seed(0)))
    assert len(records) == 4
    fed = [a[0] for a in encoded[1:]]                      # encode() calls after the context's one
    for rec, labels in zip(records, fed):                  # what was fed back is what was yielded
        assert labels.dtype == torch.long
        torch.testing.assert_close(labels.view(2, 2, 16, 16), rec.labels)
    last_ctx_skip = m.structure.encode(batch["labels"][:, -1])[1][0].repeat_interleave(2, 0)
    for k, (g, skips) in enumerate(decoded):
        if skip == "last-context" or k == 0:
            torch.testing.assert_close(skips[0], last_ctx_skip)
        else:                                              # the previous prediction's skip
            torch.testing.assert_close(skips[0], m.structure.encode(records[k - 1].labels.flatten(0, 1))[1][0])


def test_predict_is_seeded_and_samples_differ():
    m = tiny().eval()
    # a prior with a large variance, so that samples must differ
    torch.nn.init.constant_(m.structure.prior.logvar.bias, 4.0)
    batch = squares(t=3)
    ctx = {"rgb": batch["rgb"], "labels": batch["labels"]}
    a = [r.labels for r in m.predict(ctx, 3, 3, torch.Generator().manual_seed(1))]
    b = [r.labels for r in m.predict(ctx, 3, 3, torch.Generator().manual_seed(1))]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    probs = [r.frames for r in m.predict(ctx, 3, 3, torch.Generator().manual_seed(1))]
    assert not torch.equal(probs[-1][:, 0], probs[-1][:, 1])


# ----------------------------------------------------------------------------- image generator


def test_eq3_blends_the_warped_previous_frame_and_the_hallucination():
    m = tiny()
    gen = m.image
    frames = torch.rand(2, 2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 5, (2, 3, 16, 16))
    with torch.no_grad():
        gen.to_mask.bias.fill_(-30.0)                      # m = 0: the warped frame only
        gen.to_flow.bias.copy_(torch.tensor([2.0, 0.0]) / gen.cfg.flow_scale)   # w = (+2, 0) px
        frame, flow, mask, hal, warped = gen(frames, labels)
    torch.testing.assert_close(flow, torch.tensor([2.0, 0.0]).view(1, 2, 1, 1).expand(2, 2, 16, 16))
    # backward warping reads 2 px to the right: out[x] = prev[x + 2]; border pixels repeat the edge
    torch.testing.assert_close(frame[..., :-2], frames[:, -1, ..., 2:], atol=1e-5, rtol=0)
    torch.testing.assert_close(frame[..., -2:], frames[:, -1, ..., -1:].expand(-1, -1, -1, 2), atol=1e-5, rtol=0)
    with torch.no_grad():
        gen.to_mask.bias.fill_(30.0)                       # m = 1: the hallucination only
        frame, _, mask, hal, _ = gen(frames, labels)
    torch.testing.assert_close(frame, hal)
    with torch.no_grad():
        gen.to_mask.bias.fill_(0.0)                        # m = 1/2
        frame, _, mask, hal, warped = gen(frames, labels)
    torch.testing.assert_close(frame, 0.5 * warped + 0.5 * hal)


def test_inverted_forward_flow_is_the_backward_flow():
    h, w = 24, 32
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    c = torch.tensor([w / 2, h / 2])
    # a zoom about the centre: x' = c + s (x - c), forward f = (s - 1)(x - c); backward b = (1/s - 1)(x' - c)
    s = 1.2
    fwd = torch.stack([(s - 1) * (xs - c[0]), (s - 1) * (ys - c[1])])[None]
    want = torch.stack([(1 / s - 1) * (xs - c[0]), (1 / s - 1) * (ys - c[1])])[None]
    got = invert_flow(fwd)
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))
    assert float((got - want)[inner].abs().max()) < 0.02
    assert float((-fwd - want)[inner].abs().max()) > 0.3    # negating alone is not it
    const = torch.full((1, 2, 8, 8), 1.5)
    torch.testing.assert_close(invert_flow(const), -const)
    img = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(warp_border(img, torch.zeros(1, 2, 8, 8)), img)


# ----------------------------------------------------------------------------- training


def test_structure_training_lowers_the_nll():
    m = tiny()
    batch = squares(b=4, t=6)
    frozen = {k: v.clone() for k, v in m.image.state_dict().items()}
    hist = train_stage(m, "structure", batch, 40)
    first, last = hist[0]["structure"]["nll"], hist[-1]["structure"]["nll"]
    assert last < 0.5 * first, (first, last)
    assert all(torch.equal(frozen[k], v) for k, v in m.image.state_dict().items())   # image part frozen


def test_image_training_lowers_the_reconstruction_and_learns_the_flow():
    m = tiny()
    batch = squares(b=4, t=6)
    frozen = {k: v.clone() for k, v in m.structure.state_dict().items()}
    hist = train_stage(m, "image", batch, 40)
    assert hist[-1]["image"]["l1"] < 0.7 * hist[0]["image"]["l1"]
    assert hist[-1]["image"]["flow"] < hist[0]["image"]["flow"]
    assert {"d_image", "d_video"} <= set(hist[0]["d"])
    assert all(torch.equal(frozen[k], v) for k, v in m.structure.state_dict().items())


def test_image_stage_without_flow_says_how_to_get_it():
    m = tiny()
    batch = squares(t=5)
    del batch["flow"]
    with pytest.raises(InputError, match="needs the data's flow"):
        m._image_loss(batch, state(m, "image"))


# ----------------------------------------------------------------------------- CLI, checkpoints


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny preset trained one stage per run, side by side, on rendered street scenes."""
    from vpcli.cli.app import main
    root = tmp_path_factory.mktemp("hvp")
    out = {}
    for stage in ("structure", "image"):
        with pytest.raises(SystemExit) as exc:
            main(["train", "--config", "hvp-street-tiny", "--stage", stage, "--out", str(root / stage),
                  "--threads", "1", "--set", "train.val_every=0"])
        assert exc.value.code == 0
        out[stage] = root / stage
    return root, out


def test_one_stage_runs_save_only_their_part_and_predict_names_the_missing_one(runs, capsys):
    root, out = runs
    held = load_file(str(out["structure"] / "checkpoints" / "last.safetensors"))
    assert held and all(k.startswith("structure.") for k in held)
    assert all(k.startswith("image.") for k in load_file(str(out["image"] / "checkpoints" / "last.safetensors")))
    from vpcli.data.synth_street import SynthStreetConfig, render_sequence, write_sequence
    clip = root / "clip"
    write_sequence(clip, render_sequence(SynthStreetConfig(height=32, width=32, length=6), 3))
    code, _, err = run(capsys, "predict", clip, "--weights", out["structure"] / "checkpoints" / "last.safetensors",
                           "--horizon", "2", "--out", root / "pred", "--labels-from", "companion")
    assert code != 0
    line = err.strip().splitlines()[-1] if err.strip() else ""
    assert "holds only the structure part of hvp; the image part is missing" in err, err
    assert "--stage image --init structure=" in err
    assert not (root / "pred" / "clip").exists(), line


def test_export_takes_a_part_from_another_run_and_predict_runs(runs, capsys, monkeypatch):
    root, out = runs
    dest = root / "both.safetensors"
    code, _, err = run(capsys, "weights", "export", out["image"], "--name", "hvp-both", "--out", dest,
                           "--init", f"structure={out['structure']}")
    assert code == 0, err
    both = load_file(str(dest))
    s = load_file(str(out["structure"] / "checkpoints" / "last.safetensors"))
    i = load_file(str(out["image"] / "checkpoints" / "last.safetensors"))
    assert set(both) == set(s) | set(i)
    assert all(torch.equal(both[k], v) for k, v in {**s, **i}.items())
    entry = (root / "hvp-both.manifest.yaml").read_text()
    assert "part structure from" in entry
    monkeypatch.setenv("VPCLI_MANIFEST", str(root / "hvp-both.manifest.yaml"))
    dest = "hvp-both"                                      # the exported entry, by name
    from vpcli.data.synth_street import SynthStreetConfig, render_sequence, write_sequence
    clip = root / "clip2"
    write_sequence(clip, render_sequence(SynthStreetConfig(height=32, width=32, length=6), 4))
    code, _, err = run(capsys, "predict", clip, "--weights", dest, "--horizon", "5", "--samples", "2",
                           "--out", root / "pred2", "--labels-from", "companion")
    assert code == 0, err
    res = root / "pred2" / "clip2"
    names = {p.name for p in res.iterdir()}
    assert {"sample_000.mp4", "sample_001.labels", "labels_sample_000.mp4", "frames_labels_sample_001.mp4"} <= names
    assert len(list((res / "sample_000.labels").glob("*.png"))) == 5
    from vpcli.io.video import read_video
    side, _ = read_video(res / "frames_labels_sample_000.mp4")
    frames, _ = read_video(res / "sample_000.mp4")
    assert side.shape[0] == 5 and side.shape[2] == 2 * frames.shape[2]     # frames | labels
    meta = json.loads((res / "meta.json").read_text())
    assert meta["method"] == "hvp"
    # too few frames for the context: one line, nothing written
    short = root / "short"
    write_sequence(short, render_sequence(SynthStreetConfig(height=32, width=32, length=2), 5))
    code, _, err = run(capsys, "predict", short, "--weights", dest, "--horizon", "2", "--out", root / "pred3",
                           "--labels-from", "companion")
    assert code != 0 and "frames" in err and not (root / "pred3" / "short").exists()
    # labels of another class list: refused naming the ids
    bad = np.zeros((32, 32), np.uint8) + 30
    from vpcli.io.labels import write_label_png
    for f in sorted((clip / "labels").glob("*.png")):
        write_label_png(f, bad, np.arange(40 * 3, dtype=np.uint8).reshape(40, 3))
    code, _, err = run(capsys, "predict", clip, "--weights", dest, "--horizon", "2", "--out", root / "pred4",
                           "--labels-from", "companion")
    assert code != 0 and "outside this model's 19 classes" in err


def test_ablations_lstm_without_latents_and_svg_soft_feedback(monkeypatch):
    det = tiny(stochastic=False).eval()
    assert not hasattr(det.structure, "posterior") and not hasattr(det.structure, "prior")
    batch = squares(t=3)
    ctx = {"rgb": batch["rgb"], "labels": batch["labels"]}
    recs = list(det.predict(ctx, 3, 3, torch.Generator().manual_seed(0)))
    assert all(torch.equal(r.labels[:, 0], r.labels[:, 2]) for r in recs)   # no latent: samples agree
    assert all(torch.equal(r.frames[:, 0], r.frames[:, 2]) for r in recs)
    assert det.deterministic and not tiny().deterministic                     # eval scores one sample
    assert float(det.structure.loss(squares(t=4)["labels"], 3)["kld"]) == 0.0
    soft = tiny(discretize=False).eval()
    fed = _recording(monkeypatch, soft.structure.encoder, "forward")
    list(soft.predict(ctx, 2, 1, torch.Generator().manual_seed(0)))
    x = fed[-1][0]                                          # the last map fed back: probabilities
    assert x.dtype == torch.float32 and not torch.equal(x, x.round())
    torch.testing.assert_close(x.sum(1), torch.ones_like(x.sum(1)))
