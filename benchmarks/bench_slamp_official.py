"""SLAMP, vpcli vs the authors' code (github.com/kaanakan/slamp): same config, same weights, same
machine, measured side by side (issue 20).

The authors' repository is taken BY PATH (``--ref PATH``, a checkout or ``git archive`` of
kaanakan/slamp); nothing of it is copied into vpcli. Without ``--ref`` the script prints one line
and exits 0.

What it does, at the paper's Stochastic Moving MNIST config (``slamp-mmnist``: DCGAN-64, g 128,
z 20, LSTMs 256, nf 64, mask 64; the authors' widths are fixed in their code, so only presets with
nf 64 and mask_channels 64 fit):

1. Builds the authors' model set (``helpers.get_model_generic``, their init), converts its
   per-component state dicts with ``vpcli.weights.convert_slamp.convert_slamp_official`` and loads
   them into vpcli's ``SLAMP``: both hold identical weights.
2. Parity: one training step on the same batch with the same noise (the authors' Gaussian LSTMs
   draw eps inside ``reparameterize``; the harness replaces that method on their instances with
   one that reads the same table vpcli's ``loss(noise=...)`` reads): the loss terms, and the
   parameters after both Adam steps; then sampling (their ``eval_step`` vs ``SLAMP.predict`` with
   ``batchnorm: batch-per-sample``, the authors' train-mode BatchNorm protocol) frame by frame.
3. Timings, interleaved (A, B, A, B, ...), medians, ratio ours / theirs:
   training step (their ``helpers.train_step``: forward + backward + 11 Adam steps, vs
   ``SLAMP.loss`` + backward + one Adam over all parameters, as vpcli's Trainer does) at batch 32,
   5 + 10 frames, fp32; sampling 5 -> 20 frames, N sequences x S samples (their ``eval_step``
   with SSIM / LPIPS replaced by zeros, i.e. model time; vpcli: one ``predict(samples=S)`` call,
   which runs the samples in blocks of at most ``rows_per_pass`` rows), fp32 and bf16 autocast
   for vpcli, all three interleaved in each round. Sampling parity and FLOPs use the first
   ``--parity-samples`` (10) samples: both loops are linear in samples.
4. FLOPs of each step (``torch.utils.flop_counter.FlopCounterMode``, counted on the warm-up
   call; sampling's scaled from the parity samples), achieved GFLOP/s, against this CPU's
   measured fp32 / bf16 peak (a large matmul and a 3x3 conv timed here).

Run:  python benchmarks/bench_slamp_official.py --ref /path/to/kaanakan-slamp [--quick] [--threads 1]
          [--json out.json]
Patched at import (in memory, their files untouched): their ``utils`` imports matplotlib and
``skimage.measure.compare_psnr`` (removed in scikit-image 0.18) for plotting / metrics only; when
it does not import, a stand-in module carrying only their ``init_weights`` (compiled from their
``utils.py`` source) replaces it. Their ``data.base`` / ``metric_helpers`` are stubbed the same way
if they do not import (only data loading and metrics live there).
"""
from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from argparse import Namespace
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from _report import interleaved as interleave, medians, run_named  # noqa: E402  (benchmarks/, beside this script)

PATCHES: list[str] = []
LSTM_KEYS = ("static_frame_predictor", "dynamic_frame_predictor", "posterior_app", "prior_app",
             "posterior_motion", "prior_motion")


# --------------------------------------------------------------------------- the authors' code

def _function_from_source(path: str, name: str, module: types.ModuleType) -> None:
    """Compile one top-level function of ``path`` into ``module`` (their file is only read)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    code = compile(ast.Module(body=[fn], type_ignores=[]), path, "exec")
    exec(code, module.__dict__)


def import_authors(ref: str):
    """-> their ``helpers`` module, with ``ref`` first on sys.path (patches recorded in PATCHES)."""
    ref = os.path.abspath(ref)
    if not os.path.isfile(os.path.join(ref, "helpers.py")) or not os.path.isdir(os.path.join(ref, "models")):
        raise SystemExit(f"--ref {ref}: not a kaanakan/slamp checkout (helpers.py, models/ expected)")
    for clash in ("utils", "helpers", "models", "data", "metric_helpers", "flow_utils", "metrics"):
        mod = sys.modules.get(clash)
        if mod is not None and not (getattr(mod, "__file__", "") or "").startswith(ref):
            raise SystemExit(f"a module named {clash!r} is already imported from {mod.__file__}; it would shadow "
                             f"the authors' one")
    sys.path.insert(0, ref)
    try:
        importlib.import_module("utils")
    except Exception as e:  # matplotlib / skimage.measure.compare_psnr on current installs
        sys.modules.pop("utils", None)
        stub = types.ModuleType("utils")
        stub.__file__ = os.path.join(ref, "utils.py")
        _function_from_source(stub.__file__, "init_weights", stub)
        sys.modules["utils"] = stub
        PATCHES.append(f"utils: import failed ({type(e).__name__}: {str(e)[:80]}); replaced by a module holding "
                       f"only their init_weights, compiled from utils.py")
    for name, keep in (("data.base", ()), ("metric_helpers", ("_get_idx_better",))):
        try:
            importlib.import_module(name)
        except Exception as e:
            for k in [k for k in sys.modules if k == name or k.startswith(name.split(".")[0] + ".")]:
                sys.modules.pop(k, None)
            stub = types.ModuleType(name)
            stub.__file__ = os.path.join(ref, name.replace(".", "/") + ".py")
            for fn in keep:
                _function_from_source(stub.__file__, fn, stub)
            stub.torch = torch
            if "." in name:
                pkg = types.ModuleType(name.split(".")[0])
                pkg.__path__ = []
                sys.modules[pkg.__name__] = pkg
                setattr(pkg, name.split(".")[1], stub)
            sys.modules[name] = stub
            PATCHES.append(f"{name}: import failed ({type(e).__name__}: {str(e)[:80]}); stubbed")
    return importlib.import_module("helpers")


def authors_opt(cfg, batch: int, n_eval: int, nsample: int) -> Namespace:
    """``args.get_parser()``'s namespace for this config (the README's MNIST command)."""
    m = cfg.model_config()
    return Namespace(
        lr=cfg.train.optim.lr, beta1=cfg.train.optim.betas[0], batch_size=batch, optimizer=torch.optim.Adam,
        channels=cfg.data.channels, dataset="smmnist", model="dcgan", n_past=cfg.data.context,
        n_future=cfg.data.future, n_eval=n_eval, nsample=nsample, rnn_size=m.rnn_size,
        prior_rnn_layers=m.prior_rnn_layers, posterior_rnn_layers=m.posterior_rnn_layers,
        predictor_rnn_layers=m.predictor_rnn_layers, z_dim_app=m.z_dim_app, g_dim_app=m.g_dim_app,
        z_dim_motion=m.z_dim_motion, g_dim_motion=m.g_dim_motion, beta=m.beta,
        last_frame_skip=m.last_frame_skip, running_avg=m.running_avg, sch_sampling=0, sc_prob=1,
        two_lstm=False, motion_skip=m.motion_skip, is_real_dataset=False, device=False)


def set_batch(models: dict, opt: Namespace, batch: int) -> None:
    opt.batch_size = batch
    for k in LSTM_KEYS:
        models[k].batch_size = batch


class NoiseFeed:
    """The same standard-normal table for both implementations: ``table[kind][t]`` is (B, z) in
    training and (B, S, z) in sampling. Installed on the authors' Gaussian LSTM instances as their
    ``reparameterize`` (call k after ``init_hidden`` is transition t = k + 1 in both their
    train_step and eval_step; sample s = number of ``init_hidden`` calls - 1 in eval_step)."""

    def __init__(self, table: dict):
        self.table = table

    def ours(self, kind, t, shape):
        return self.table[kind][t].reshape(shape)

    def install(self, models: dict, sampling: bool) -> None:
        for key in ("posterior_app", "prior_app", "posterior_motion", "prior_motion"):
            mod, kind = models[key], ("app" if key.endswith("_app") else "motion")
            state = {"k": 0, "s": -1}
            orig_init = type(mod).init_hidden.__get__(mod)

            def init_hidden(device, _o=orig_init, _st=state):
                _st["k"], _st["s"] = 0, _st["s"] + 1
                return _o(device)

            def reparameterize(mu, logvar, _st=state, _kind=kind):
                _st["k"] += 1
                e = self.table[_kind][_st["k"]]
                e = e[:, _st["s"]] if sampling else e
                return e.to(mu).mul(logvar.mul(0.5).exp()).add(mu)
            mod.init_hidden, mod.reparameterize = init_hidden, reparameterize

    @staticmethod
    def remove(models: dict) -> None:
        for key in ("posterior_app", "prior_app", "posterior_motion", "prior_motion"):
            for attr in ("init_hidden", "reparameterize"):
                models[key].__dict__.pop(attr, None)


# --------------------------------------------------------------------------- both models

def build_pair(helpers, cfg, batch: int, n_eval: int, nsample: int, seed: int = 0):
    from vpcli import registry
    from vpcli.weights.convert_slamp import convert_slamp_official

    m = cfg.model_config()
    if m.nf != 64 or m.mask_channels != 64 or m.backbone != "dcgan64":
        raise SystemExit("the authors' DCGAN-64 / mask predictor widths are fixed (nf 64, mask 64): use a preset "
                         "with those (slamp-mmnist)")
    opt = authors_opt(cfg, batch, n_eval, nsample)
    torch.manual_seed(seed)
    theirs, their_opts = helpers.get_model_generic(opt, torch.device("cpu"))
    mcfg = cfg.model_config()
    ours = registry.get("predictor", cfg.method).builder(mcfg)
    state = convert_slamp_official({k: v.state_dict() for k, v in theirs.items()}, model=ours)
    ours.load_state_dict(state, strict=True)
    ours_opt = torch.optim.Adam(ours.parameters(), lr=cfg.train.optim.lr, betas=tuple(cfg.train.optim.betas))
    return theirs, their_opts, opt, ours, ours_opt


def their_train_step(helpers, x_tb, models, optims, opt):
    """-> (pixel, flow, mask, kld) sums over the transitions, as train_step computes them."""
    for v in models.values():
        v.train()
    p, f, mk, kld = helpers.train_step(x_tb, models, optims, opt, torch.device("cpu"))
    n = opt.n_past + opt.n_future  # train_step divides its sums by N
    return [float(v) * n for v in (p, f, mk, kld)]


def our_train_step(ours, opt, x_bt, noise=None):
    from vpcli.predictors.base import TrainState

    ours.train()
    opt.zero_grad(set_to_none=True)
    out = ours.loss({"rgb": x_bt}, TrainState(), noise=noise)
    out["loss"].backward()
    opt.step()
    steps = x_bt.shape[1] - 1
    return [float(out[k].detach()) * steps for k in ("mse_app", "mse_motion", "mse", "kl")], float(out["loss"].detach())


def their_sample(helpers, x_tb, models, opt, record: list | None = None):
    """Their eval_step (encoders/decoders in train mode, LSTMs in eval mode, as
    load_model_from_checkpoint leaves them), SSIM / LPIPS replaced by zeros (model time)."""
    mh = helpers.metric_helpers

    def ssim(sample, gt):
        if record is not None:
            record.append(sample.clone())
        return torch.zeros(sample.shape[0], sample.shape[1], sample.shape[2])

    mh._ssim_wrapper = ssim
    mh._lpips_wrapper = lambda sample, gt, model: torch.zeros(sample.shape[0], sample.shape[1])
    for k, v in models.items():
        v.eval() if k in LSTM_KEYS else v.train()
    return helpers.eval_step(x_tb, models, opt, torch.device("cpu"), None)


def our_sample(ours, ctx, horizon, samples, chunk, noise=None, bf16=False):
    ours.eval()
    outs = []
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    with amp:
        for i in range(0, ctx.shape[0], chunk):
            c = ctx[i:i + chunk]
            nz = None if noise is None else (lambda kind, t, shape, _i=i: noise(kind, t, None)[_i:_i + shape[0]])
            outs.append(torch.stack([r.frames.float() for r in ours.predict({"rgb": c}, horizon, samples=samples,
                                                                             noise=nz)], 2))
    return torch.cat(outs)  # (B, S, T, C, H, W)


# --------------------------------------------------------------------------- measurements

def now() -> float:
    return time.perf_counter()


def flops_of(fn) -> tuple[float, float]:
    """(FLOPs, seconds) of one call of ``fn`` under FlopCounterMode (the call doubles as warm-up)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    t = now()
    with counter:
        fn()
    return float(counter.get_total_flops()), now() - t


def in_channels_last(model, fn):
    """``fn`` run with ``model`` converted to channels-last inside the call, and back after it."""
    def call():
        model.to(memory_format=torch.channels_last)
        fn()
        model.to(memory_format=torch.contiguous_format)
    return call


def summary(ours_t, theirs_t, ours_flops, theirs_flops):
    mo, mt = statistics.median(ours_t), statistics.median(theirs_t)
    return {"ours_s": mo, "theirs_s": mt, "ratio_ours_over_theirs": mo / mt,
            "ratio_per_round": [a / b for a, b in zip(ours_t, theirs_t)], "ours_s_all": ours_t,
            "theirs_s_all": theirs_t, "ours_gflop": ours_flops / 1e9, "theirs_gflop": theirs_flops / 1e9,
            "ours_gflop_s": ours_flops / mo / 1e9, "theirs_gflop_s": theirs_flops / mt / 1e9}


def bench_train(helpers, cfg, batch, repeats, seed, bf16_ok=False):
    theirs, their_opts, opt, ours, ours_opt = build_pair(helpers, cfg, batch, cfg.data.length, 1, seed)
    g = torch.Generator().manual_seed(seed + 1)
    n = cfg.data.length
    x = torch.rand(batch, n, cfg.data.channels, *cfg.data.size, generator=g)      # (B, T, C, H, W)
    x_tb = x.transpose(0, 1).contiguous()                                           # theirs: (T, B, C, H, W)
    z = {"app": cfg.model_config().z_dim_app, "motion": cfg.model_config().z_dim_motion}
    table = {k: [None] + [torch.randn(batch, d, generator=g) for _ in range(1, n)] for k, d in z.items()}
    feed = NoiseFeed(table)
    # --- parity: one step each from identical weights, identical batch and noise
    feed.install(theirs, sampling=False)
    theirs_terms = their_train_step(helpers, x_tb, theirs, their_opts, opt)
    NoiseFeed.remove(theirs)
    ours_terms, ours_loss = our_train_step(ours, ours_opt, x, noise=lambda kind, t, shape: table[kind][t])
    beta = cfg.model_config().beta
    theirs_loss = sum(theirs_terms[:3]) + beta * theirs_terms[3]
    from vpcli.weights.convert_slamp import convert_slamp_official
    after = convert_slamp_official({k: v.state_dict() for k, v in theirs.items()})
    own = ours.state_dict()
    pnames = {k for k, _ in ours.named_parameters()}

    def maxdiff(keys):
        return max((float((after[k].float() - own[k].float()).abs().max()) for k in keys), default=0.0)
    pdiff = maxdiff(pnames)
    # Gradients of the parity step (both still hold them: neither zeroes after stepping). Adam's first
    # step moves every parameter by about lr * sign(grad), so a near-zero gradient whose sign differs
    # by rounding gives a parameter difference of up to 2 lr: the gradients are the sharper check.
    g_theirs = convert_slamp_official({k: {n: p.grad for n, p in v.named_parameters() if p.grad is not None}
                                       for k, v in theirs.items()})
    g_ours = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    gdiff = max(float((g_ours[k] - g_theirs[k]).abs().max()) for k in g_ours)
    gscale = max(float(g.abs().max()) for g in g_ours.values())
    missing_grads = sorted(set(g_ours) ^ set(g_theirs))
    # BatchNorm running statistics differ by design: train_step encodes every frame twice (as input
    # and as target), updating them twice per step; vpcli encodes it once (module docstring).
    bdiff = maxdiff(k for k in own if k not in pnames and own[k].is_floating_point())
    parity = {"loss_ours": ours_loss, "loss_theirs": theirs_loss, "loss_abs_diff": abs(ours_loss - theirs_loss),
              "terms": ["mse_app", "mse_motion", "mse", "kl"],
              "terms_abs_diff": [abs(a - b) for a, b in zip(ours_terms, theirs_terms)],
              "grads_max_abs_diff": gdiff, "grads_max_abs": gscale, "grads_only_on_one_side": missing_grads,
              "params_after_step_max_abs_diff": pdiff, "adam_lr": cfg.train.optim.lr, "bn_running_stats_after_step_max_abs_diff": bdiff,
              "bn_note": "their train_step encodes each frame twice, updating BatchNorm running statistics twice"}
    print("  parity (train):", json.dumps(parity), flush=True)

    # --- timings (their code as written: their own randn; ours: its default noise)
    def a():
        our_train_step(ours, ours_opt, x)

    def b():
        their_train_step(helpers, x_tb, theirs, their_opts, opt)
    fo, wo = flops_of(a)
    ft, wt = flops_of(b)
    # fp32 in channels-last too, as the Trainer runs it on AVX-512 (train_channels_last_fp32_avx512)
    times = interleave({"ours": a, "ours_channels_last": in_channels_last(ours, a), "theirs": b}, repeats)
    ta, tb = times["ours"], times["theirs"]
    res = {"batch": batch, "frames": n, "dtype": "float32", "repeats": repeats, "parity": parity,
           "warmup_s": {"ours": wo, "theirs": wt}, **summary(ta, tb, fo, ft),
           "ours_channels_last_s": statistics.median(times["ours_channels_last"]),
           "ours_channels_last_s_all": times["ours_channels_last"],
           "ratio_ours_channels_last_over_theirs": statistics.median(times["ours_channels_last"]) / statistics.median(tb)}
    if bf16_ok:
        res["bf16_autocast_ours"] = bench_train_bf16(ours, ours_opt, x, b, repeats, table)
    else:
        res["bf16_autocast_ours"] = "skipped: CPU capability is not AVX512 (no native bf16 path)"
    return res


def bench_train_bf16(ours, opt, x, theirs_step, repeats, table) -> dict:
    """Our training step under bf16 autocast (what ``train.amp=bf16`` runs), contiguous and with the
    model in channels-last memory format (converted inside the timed call, both ways), against
    their fp32 step, interleaved; and the loss under autocast against fp32 on the same batch and noise."""
    noise = lambda kind, t, shape: table[kind][t]  # noqa: E731
    from vpcli.predictors.base import TrainState

    def loss(bf16: bool) -> float:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return float(ours.loss({"rgb": x}, TrainState(), noise=noise)["loss"])
    l32, l16 = loss(False), loss(True)

    def a16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            our_train_step(ours, opt, x)

    t = interleave({"bf16": a16, "bf16_channels_last": in_channels_last(ours, a16), "theirs_fp32": theirs_step},
                   repeats, warmup=True)
    m = medians(t)
    return {"ours_s": m["bf16"], "ours_channels_last_s": m["bf16_channels_last"], "theirs_fp32_s": m["theirs_fp32"],
            "ratio_ours_bf16_over_theirs_fp32": m["bf16"] / m["theirs_fp32"],
            "ratio_ours_bf16_channels_last_over_theirs_fp32": m["bf16_channels_last"] / m["theirs_fp32"],
            "rounds_s": t, "loss_fp32": l32, "loss_bf16": l16, "loss_rel_diff": abs(l16 - l32) / abs(l32)}


def bench_sample(helpers, cfg, n_seq, samples, horizon, repeats, chunk, seed, bf16_ok, parity_samples=10):
    """Parity and FLOPs on the first ``parity_samples`` samples (their loop and ours are linear in
    samples: at the paper's 100 each of those passes would cost as much as a timed round), then
    ``repeats`` interleaved rounds of all ``samples``: ours fp32, ours bf16 (where native), theirs."""
    t0 = cfg.data.context
    n_eval = t0 + horizon
    ps = min(samples, parity_samples)
    theirs, _, opt, ours, _ = build_pair(helpers, cfg, n_seq, n_eval, samples, seed)
    ours.config.batchnorm = "batch-per-sample"
    ours._setup_batchnorm()
    from vpcli.engine.loading import for_inference
    ours = for_inference(ours, "cpu")  # as vpcli predict / eval run it (channels-last weights on the CPU)
    set_batch(theirs, opt, n_seq)
    g = torch.Generator().manual_seed(seed + 2)
    x = torch.rand(n_seq, n_eval, cfg.data.channels, *cfg.data.size, generator=g)
    x_tb = x.transpose(0, 1).contiguous()
    ctx = x[:, :t0]
    z = {"app": cfg.model_config().z_dim_app, "motion": cfg.model_config().z_dim_motion}
    table = {k: [None] + [torch.randn(n_seq, ps, d, generator=g) for _ in range(1, n_eval)]
             for k, d in z.items()}
    feed = NoiseFeed(table)
    # --- parity: their frames (recorded per sample) vs ours, same noise
    rec: list = []
    bn_state = {k: {n: b.clone() for n, b in v.named_buffers()} for k, v in theirs.items()}
    opt.nsample = ps
    feed.install(theirs, sampling=True)
    their_sample(helpers, x_tb, theirs, opt, rec)
    NoiseFeed.remove(theirs)
    theirs_frames = torch.stack(rec, 2).permute(1, 2, 0, 3, 4, 5)           # (T, B, S, ...) -> (B, S, T, ...)
    ours_frames = our_sample(ours, ctx, horizon, ps, n_seq, noise=lambda kind, t, shape: table[kind][t])
    d = (ours_frames - theirs_frames).abs()
    # The warp's validity mask is a threshold (flow_utils.warp: mask < 0.9999 -> 0, and vpcli's
    # backward_warp alike): a sampling point at the border can flip on a rounding difference, and
    # the flipped pixel then propagates through later frames of that sample. Hence the counts.
    parity = {"samples": ps, "frames_max_abs_diff": float(d.max()), "frames_mean_abs_diff": float(d.mean()),
              "pixels_over_1e-3": int((d > 1e-3).sum()), "pixels": d.numel(),
              "samples_over_1e-3": int((d.amax(dim=(2, 3, 4, 5)) > 1e-3).sum()),
              "sample_paths": d.shape[0] * d.shape[1],
              "max_abs_diff_per_step": [float(v) for v in d.amax(dim=(0, 1, 3, 4, 5))],
              "mean_abs_diff_per_step": [float(v) for v in d.mean(dim=(0, 1, 3, 4, 5))],
              "frames_shape": list(ours_frames.shape), "batchnorm": "batch-per-sample (their train-mode protocol)",
              "note": "their eval_step updates BatchNorm running statistics in train mode; ours does not"}
    if bf16_ok:
        parity["bf16_frames_max_abs_diff_vs_fp32"] = float(
            (our_sample(ours, ctx, horizon, ps, n_seq, bf16=True, noise=lambda kind, t, shape: table[kind][t])
             - ours_frames).abs().max())
    for k, v in theirs.items():  # undo their running-statistics updates (they do not change sampling)
        for n, b in v.named_buffers():
            b.copy_(bn_state[k][n])
    print("  parity (sampling):", json.dumps(parity), flush=True)
    # FLOPs of a ps-sample call each (it doubles as warm-up), scaled to `samples`
    fo, wo = flops_of(lambda: our_sample(ours, ctx, horizon, ps, chunk))
    ft, wt = flops_of(lambda: their_sample(helpers, x_tb, theirs, opt))
    fo, ft = fo * samples / ps, ft * samples / ps
    opt.nsample = samples
    cases = {"ours": lambda: our_sample(ours, ctx, horizon, samples, chunk),
             **({"ours_bf16": lambda: our_sample(ours, ctx, horizon, samples, chunk, bf16=True)} if bf16_ok else {}),
             "theirs": lambda: their_sample(helpers, x_tb, theirs, opt)}
    times = interleave(cases, repeats)
    ta, tb = times["ours"], times["theirs"]
    blocks = ours.sample_blocks(min(chunk, n_seq), samples, tuple(cfg.data.size))
    res = {"sequences": n_seq, "samples": samples, "context": t0, "horizon": horizon, "repeats": repeats,
           "ours_sequences_per_call": chunk, "ours_sample_blocks_per_call": len(blocks),
           "ours_rows_per_pass": min(chunk, n_seq) * (blocks[0][1] - blocks[0][0]),
           "parity": parity, "warmup_s": {"ours": wo, "theirs": wt}, "flops_counted_at_samples": ps, **summary(ta, tb, fo, ft)}
    if bf16_ok:
        t16 = times["ours_bf16"]
        res["bf16_autocast_ours"] = {"ours_s": statistics.median(t16), "ours_s_all": t16,
                                     "ratio_ours_bf16_over_theirs_fp32": statistics.median(t16) / statistics.median(tb),
                                     "speedup_over_ours_fp32": res["ours_s"] / statistics.median(t16),
                                     "frames_max_abs_diff_vs_fp32": parity["bf16_frames_max_abs_diff_vs_fp32"]}
    else:
        res["bf16_autocast_ours"] = "skipped: CPU capability is not AVX512 (no native bf16 path)"
    return res


def bench_peak(quick: bool) -> dict:
    """Best of a few timed calls: a square matmul and a 3x3 conv, fp32 and bf16."""
    out = {}
    n = 1024 if quick else 2048
    reps = 3 if quick else 5
    conv_shape = (8 if quick else 32, 64, 64, 64)
    for dt in (torch.float32, torch.bfloat16):
        name = str(dt).split(".")[1]
        a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
        a @ b
        best = min(_time(lambda: a @ b) for _ in range(reps))
        xs = torch.randn(*conv_shape).to(dt)
        w = torch.randn(64, 64, 3, 3).to(dt)
        torch.nn.functional.conv2d(xs, w, padding=1)
        cbest = min(_time(lambda: torch.nn.functional.conv2d(xs, w, padding=1)) for _ in range(reps))
        conv_flops = 2 * conv_shape[0] * 64 * 64 * 64 * 64 * 9
        out[name] = {"matmul_n": n, "matmul_gflop_s": 2 * n ** 3 / best / 1e9,
                     "conv3x3_shape": list(conv_shape), "conv3x3_gflop_s": conv_flops / cbest / 1e9}
        out[name]["peak_gflop_s"] = max(out[name]["matmul_gflop_s"], out[name]["conv3x3_gflop_s"])
    return out


def _time(fn) -> float:
    t = now()
    fn()
    return now() - t


def headroom(res: dict) -> dict:
    peak32 = res["peak"]["float32"]["peak_gflop_s"]
    peak16 = res["peak"]["bfloat16"]["peak_gflop_s"]
    out = {}
    for case in ("train_step", "sampling"):
        r = res.get(case)
        if not isinstance(r, dict) or "ours_gflop_s" not in r:
            continue
        out[case] = {"ours_fraction_of_fp32_peak": r["ours_gflop_s"] / peak32,
                     "theirs_fraction_of_fp32_peak": r["theirs_gflop_s"] / peak32,
                     "ours_headroom_x_fp32": peak32 / r["ours_gflop_s"],
                     "ours_headroom_x_bf16": peak16 / r["ours_gflop_s"]}
        b = r.get("bf16_autocast_ours")
        if isinstance(b, dict):
            g16 = r["ours_gflop"] / b["ours_s"]
            out[case].update(ours_bf16_gflop_s=g16, ours_bf16_fraction_of_bf16_peak=g16 / peak16)
    return out


def ref_commit(ref: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", ref, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip() or None
    except Exception:
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=None, help="path of a kaanakan/slamp checkout (without it: skip)")
    ap.add_argument("--ref-commit", default=None, help="the checkout's commit, when --ref is not a git work tree")
    ap.add_argument("--preset", default="slamp-mmnist")
    ap.add_argument("--quick", action="store_true", help="batch 4, 2 sequences x 4 samples, 3 rounds (minutes on 1 core)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=None, help="training batch (32; --quick 4)")
    ap.add_argument("--sequences", type=int, default=None, help="sampling: sequences (20; --quick 2)")
    ap.add_argument("--samples", type=int, default=None, help="sampling: samples per sequence (100; --quick 4)")
    ap.add_argument("--horizon", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (5; --quick 3)")
    ap.add_argument("--chunk", type=int, default=None,
                    help="ours: sequences per predict call (default: all; predict runs them in sample blocks)")
    ap.add_argument("--parity-samples", type=int, default=10,
                    help="sampling: samples of the parity and FLOP-count passes (default 10)")
    ap.add_argument("--malloc", choices=("heap", "glibc"), default="heap",
                    help="glibc malloc mode of this process, both sides (vpcli.allocator; default heap, as "
                         "vpcli's CLI runs; glibc: as a plain python process runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-only", action="store_true", help="the training step only (no sampling)")
    ap.add_argument("--sampling-only", action="store_true", help="sampling only (no training step)")
    ap.add_argument("--json", default=None, help="write the results here as well")
    args = ap.parse_args(argv)
    if not args.ref:
        print("bench_slamp_official: skipped (no --ref PATH to a checkout of github.com/kaanakan/slamp)")
        return 0
    if not os.path.isdir(args.ref):
        print(f"bench_slamp_official: skipped (--ref {args.ref} does not exist)")
        return 0
    torch.set_num_threads(args.threads)
    # One malloc mode for the whole process, both sides: switching modes between the two codes in
    # one process does not separate them (once the heap holds freed large blocks, glibc reuses them
    # whatever its mmap setting); benchmarks/bench_slamp_predict.py runs one process per mode.
    from vpcli import allocator
    malloc = allocator.configure(args.malloc)
    q = args.quick
    batch = args.batch or (4 if q else 32)
    n_seq = args.sequences or (2 if q else 20)
    samples = args.samples or (4 if q else 100)
    repeats = args.repeats or (3 if q else 5)
    chunk = args.chunk or n_seq

    helpers = import_authors(args.ref)
    from vpcli.engine.run import resolve_config

    cfg = resolve_config(None, args.preset)
    cap = torch.backends.cpu.get_cpu_capability()
    res = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "cpu_capability": cap,
                       "cpu": platform.processor() or platform.machine(), "load_avg": list(os.getloadavg()),
                       "malloc": malloc},
           "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
           "ref": {"path": os.path.abspath(args.ref), "commit": args.ref_commit or ref_commit(args.ref),
                   "patches": PATCHES},
           "preset": args.preset}
    print(json.dumps(res), flush=True)
    run_named((
        ("peak", lambda: bench_peak(q)),
        *((("train_step", lambda: bench_train(helpers, cfg, batch, repeats, args.seed, cap.startswith("AVX512"))),)
          if not args.sampling_only else ()),
        *((("sampling", lambda: bench_sample(helpers, cfg, n_seq, samples, args.horizon, repeats, chunk, args.seed,
                                             cap.startswith("AVX512"), args.parity_samples)),) if not args.train_only else ()),
    ), None, res)
    res["headroom"] = headroom(res)
    print("headroom", json.dumps(res["headroom"]))
    t, s = res.get("train_step"), res.get("sampling")
    if t is not None:
        print(f"train step  (batch {t['batch']}, {t['frames']} frames, fp32): ours {t['ours_s']:.3f} s, theirs "
              f"{t['theirs_s']:.3f} s, ratio ours/theirs {t['ratio_ours_over_theirs']:.3f}; loss diff "
              f"{t['parity']['loss_abs_diff']:.2e}, grads {t['parity']['grads_max_abs_diff']:.2e} (max |grad| "
              f"{t['parity']['grads_max_abs']:.2e}), params after Adam step {t['parity']['params_after_step_max_abs_diff']:.2e}; "
              f"{t['ours_gflop']:.1f} / {t['theirs_gflop']:.1f} GFLOP, {t['ours_gflop_s']:.1f} / "
              f"{t['theirs_gflop_s']:.1f} GFLOP/s; ours channels-last {t['ours_channels_last_s']:.3f} s (ratio "
              f"{t['ratio_ours_channels_last_over_theirs']:.3f})")
    if t is not None and isinstance(t["bf16_autocast_ours"], dict):
        b = t["bf16_autocast_ours"]
        print(f"train step  bf16 autocast: ours {b['ours_s']:.3f} s (ratio vs theirs fp32 "
              f"{b['ratio_ours_bf16_over_theirs_fp32']:.3f}), channels-last {b['ours_channels_last_s']:.3f} s "
              f"({b['ratio_ours_bf16_channels_last_over_theirs_fp32']:.3f}); loss {b['loss_bf16']:.6g} vs fp32 "
              f"{b['loss_fp32']:.6g} (relative {b['loss_rel_diff']:.2e})")
    if s is None:
        s = {}
    line = "" if not s else (f"sampling    ({s['sequences']} seq x {s['samples']} samples, {s['context']} -> {s['horizon']}): ours "
            f"{s['ours_s']:.3f} s, theirs {s['theirs_s']:.3f} s, ratio {s['ratio_ours_over_theirs']:.3f}; frames diff "
            f"{s['parity']['frames_max_abs_diff']:.2e} max / {s['parity']['frames_mean_abs_diff']:.2e} mean, "
            f"{s['parity']['pixels_over_1e-3']} of {s['parity']['pixels']} pixels > 1e-3 "
            f"({s['parity']['samples_over_1e-3']} of {s['parity']['sample_paths']} sample paths); {s['ours_gflop']:.1f} / {s['theirs_gflop']:.1f} GFLOP")
    if isinstance(s.get("bf16_autocast_ours"), dict):
        b = s["bf16_autocast_ours"]
        line += f"; ours bf16 {b['ours_s']:.3f} s (ratio vs theirs fp32 {b['ratio_ours_bf16_over_theirs_fp32']:.3f})"
    if line:
        print(line)
    p = res["peak"]
    print(f"peak        fp32 {p['float32']['peak_gflop_s']:.1f} GFLOP/s, bf16 {p['bfloat16']['peak_gflop_s']:.1f} "
          f"GFLOP/s ({cap}, {res['machine']['threads']} thread(s))")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
