"""Flow backends (DIS, Farnebaeck) against exact ground truth, the occlusion check, the streaming
runner and `vpcli flow`.

Ground truth:
- a real photograph moved by a known homography H: the pixel at x in frame a is at H(x) in frame b
  (cv2.warpPerspective(a, H) puts src x at dst H x), so the forward flow is H(x) - x, exactly;
- the Middlebury 2014 motorcycle stereo pair (scikit-image): left x matches right x - d, so the
  flow left -> right is (-d, 0) on pixels with a finite disparity;
- synthetic street sequences (vpcli.data.synth_street): exact flow, scored on non-occluded pixels.

The thresholds hold with a margin of about 1.5-2x over the measured values (printed by
benchmarks/bench_flow.py). The published PWC-Net weights are not downloadable here; the slim
model vpcli bundles is scored by scripts/train_pwcnet.py --eval-only and tests/test_pwcnet.py.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from vpcli import registry
from vpcli.cli.app import main
from vpcli.errors import DataFormatError, UsageError, VideoError
from vpcli.io.flow import read_flo, read_flow_npz
from vpcli.preprocess.flow_cases import astronaut_homography, stereo_motorcycle

skimage_data = pytest.importorskip("skimage.data")


# --------------------------------------------------------------------------------------------
# Ground truth


def epe(est: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    """Mean end-point error over valid pixels; est/gt (..., 2, H, W) with valid broadcastable to (..., H, W)."""
    err = np.sqrt(((est - gt) ** 2).sum(-3))
    return float(err[np.broadcast_to(valid, err.shape)].mean())


@pytest.fixture(scope="module")
def astronaut_pair():
    return astronaut_homography(256)


@pytest.fixture(scope="module")
def street():
    from vpcli.data.synth_street import SynthStreetConfig, render_sequence
    return render_sequence(SynthStreetConfig(height=128, width=256, length=3), 1)


@pytest.fixture(scope="module")
def dis():
    return registry.create("flow", "dis")


@pytest.fixture(scope="module")
def farneback():
    return registry.create("flow", "farneback")


# --------------------------------------------------------------------------------------------
# Accuracy


@pytest.mark.parametrize("method, limit", [("dis", 0.6), ("farneback", 2.0)])
def test_homography_on_a_real_photograph(astronaut_pair, method, limit):
    a, b, gt, valid = astronaut_pair
    flow = registry.create("flow", method).estimate(a, b)
    zero = epe(np.zeros_like(gt), gt, valid)  # 7.4 px
    assert epe(flow, gt, valid) < limit < 0.3 * zero


def test_homography_direction_convention(astronaut_pair, dis):
    """Swapping the frames gives the inverse motion (a sign error would not be caught by EPE alone)."""
    a, b, gt, valid = astronaut_pair
    fwd = dis.estimate(a, b)
    assert np.median(fwd[0][valid] * gt[0][valid]) > 0 and np.median(fwd[1][valid] * gt[1][valid]) > 0
    bwd = dis.estimate(b, a)
    assert np.median((bwd[0] * gt[0])[valid]) < 0


@pytest.mark.parametrize("method, limit", [("dis", 1.6), ("farneback", 8.0)])
def test_stereo_motorcycle_disparity(method, limit):
    left, right, gt, valid = stereo_motorcycle(4)
    flow = registry.create("flow", method).estimate(left, right)
    zero = epe(np.zeros_like(gt), gt, valid)  # mean disparity, 8.9 px at 1/4 scale
    assert epe(flow, gt, valid) < min(limit, 0.9 * zero)


@pytest.mark.parametrize("method, limit", [("dis", 3.6), ("farneback", 5.5)])
def test_synthetic_street_exact_flow(street, method, limit):
    flow = registry.create("flow", method).estimate(street.rgb[:-1], street.rgb[1:])
    valid = ~street.occlusion_forward
    zero = epe(np.zeros_like(street.flow_forward), street.flow_forward, valid)  # 6.4 px
    assert epe(flow, street.flow_forward, valid) < min(limit, 0.85 * zero)


def test_dis_medium_beats_fast_on_the_homography(astronaut_pair):
    a, b, gt, valid = astronaut_pair
    medium = epe(registry.create("flow", "dis").estimate(a, b), gt, valid)
    fast = epe(registry.create("flow", "dis", preset="fast").estimate(a, b), gt, valid)
    assert medium < fast


# --------------------------------------------------------------------------------------------
# Occlusion


def test_forward_backward_check_recovers_exact_occlusion(street):
    from vpcli.preprocess.occlusion import forward_backward_occlusion
    occ_f, occ_b = forward_backward_occlusion(street.flow_forward, street.flow_backward)
    assert occ_f.shape == street.occlusion_forward.shape and occ_f.dtype == bool
    for est, gt, min_prec, min_rec in ((occ_f, street.occlusion_forward, 0.95, 0.95),
                                       (occ_b, street.occlusion_backward, 0.6, 0.8)):
        tp = (est & gt).sum()
        assert tp / est.sum() > min_prec and tp / gt.sum() > min_rec


def test_consistent_flows_are_not_occluded():
    from vpcli.preprocess.occlusion import forward_backward_occlusion
    fwd = np.zeros((1, 2, 20, 30), np.float32)
    fwd[:, 0] = 3.0
    occ_f, occ_b = forward_backward_occlusion(fwd, -fwd)
    assert not occ_f[:, :, :-3].any() and occ_f[:, :, -3:].all()  # the last 3 columns leave the view
    assert not occ_b[:, :, 3:].any() and occ_b[:, :, :3].all()
    occ_f, _ = forward_backward_occlusion(fwd, np.zeros_like(fwd))  # backward disagrees by 3 px
    assert occ_f.all()


# --------------------------------------------------------------------------------------------
# The estimator interface


def test_estimator_inputs_and_outputs(dis):
    import torch
    rng = np.random.default_rng(0)
    frames = np.stack([cv2.GaussianBlur(f, (5, 5), 0) for f in (rng.random((3, 32, 48, 3)) * 255).astype(np.uint8)])
    batch = dis.estimate(frames[:2], frames[1:])
    assert batch.shape == (2, 2, 32, 48) and batch.dtype == np.float32
    np.testing.assert_array_equal(dis.estimate(frames[0], frames[1]), batch[0])
    t = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W) in [0, 1]
    out = dis.estimate(t[:2], t[1:])
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), batch)
    with pytest.raises(DataFormatError, match="differ in shape"):
        dis.estimate(frames[:2], frames[:1])
    with pytest.raises(UsageError, match="preset"):
        registry.create("flow", "dis", preset="slow")


def test_streaming_holds_at_most_one_batch(dis):
    from vpcli.engine.flow_runner import iter_pair_flows
    rng = np.random.default_rng(0)
    pulled = []

    def frames():
        for i in range(10):
            pulled.append(i)
            yield (rng.random((16, 24, 3)) * 255).astype(np.uint8)

    seen = []
    for t0, fwd, bwd in iter_pair_flows(frames(), dis, batch_size=4, forward=True, backward=True):
        seen.append((t0, len(fwd), len(bwd), len(pulled)))
    # batch k covers pairs 4k..4k+3 and has pulled frames up to 4k+4 only
    assert seen == [(0, 4, 4, 5), (4, 4, 4, 9), (8, 1, 1, 10)]


# --------------------------------------------------------------------------------------------
# `vpcli flow`


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def write_frames(folder, frames):
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.png"), np.ascontiguousarray(f[..., ::-1]))
    return folder


@pytest.fixture(scope="module")
def small_street():
    from vpcli.data.synth_street import SynthStreetConfig, render_sequence
    return render_sequence(SynthStreetConfig(height=48, width=64, length=4), 2)


def test_cli_writes_every_output(tmp_path, capsys, small_street):
    clip = write_frames(tmp_path / "clip", small_street.rgb)
    code, out, err = run_cli(capsys, "flow", str(clip), "--out", str(tmp_path / "out"), "--direction", "both",
                             "--occlusion", "--batch-size", "2", "--json")
    assert code == 0, err
    record = json.loads(out.strip())
    assert record["ok"] and record["pairs"] == 3 and record["method"] == "dis"
    d = tmp_path / "out" / "clip"
    names = sorted(p.name for p in d.iterdir())
    assert names == ["backward", "flow_backward.mp4", "flow_backward.npz", "flow_forward.mp4", "flow_forward.npz",
                     "forward", "meta.json", "occlusion.mp4", "occlusion.npz"]  # no scratch or temporary left
    fwd, bwd = read_flow_npz(d / "flow_forward.npz"), read_flow_npz(d / "flow_backward.npz")
    assert fwd.shape == bwd.shape == (3, 2, 48, 64)
    for i in range(3):
        np.testing.assert_array_equal(read_flo(d / "forward" / f"{i:05d}.flo"), fwd[i])
        np.testing.assert_array_equal(read_flo(d / "backward" / f"{i:05d}.flo"), bwd[i])
    dis = registry.create("flow", "dis")
    np.testing.assert_allclose(fwd, dis.estimate(small_street.rgb[:-1], small_street.rgb[1:]), atol=1e-5)
    np.testing.assert_allclose(bwd, dis.estimate(small_street.rgb[1:], small_street.rgb[:-1]), atol=1e-5)
    with np.load(d / "occlusion.npz") as z:
        assert z["forward"].shape == z["backward"].shape == (3, 48, 64) and z["forward"].dtype == bool
    meta = json.loads((d / "meta.json").read_text())
    assert meta["method"] == "dis" and meta["parameters"]["preset"] == "medium" and meta["pairs"] == 3
    assert meta["input"] == str(clip) and set(meta["timings"]) >= {"decode", "estimate", "write", "total"}
    from vpcli.io.video import probe
    assert probe(d / "flow_forward.mp4").num_frames == 3 and probe(d / "occlusion.mp4").width == 2 * 64 + 2

    # refused without --overwrite (exit 1, nothing touched), replaced with it
    code, _, err = run_cli(capsys, "flow", str(clip), "--out", str(tmp_path / "out"))
    assert code == 1 and "already exists" in err and "--overwrite" in err
    assert (d / "backward").is_dir()
    code, _, err = run_cli(capsys, "flow", str(clip), "--out", str(tmp_path / "out"), "--overwrite",
                           "--method", "farneback")
    assert code == 0, err
    assert not (d / "backward").exists() and json.loads((d / "meta.json").read_text())["method"] == "farneback"


def test_cli_reads_a_video_and_backward_only(tmp_path, capsys, small_street):
    from vpcli.io.video import VideoWriter
    with VideoWriter(tmp_path / "v.mp4", fps=10, lossless=True) as w:
        for f in small_street.rgb:
            w.write(f)
    code, _, err = run_cli(capsys, "flow", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o"),
                           "--direction", "backward", "--size", "32x48")
    assert code == 0, err
    d = tmp_path / "o" / "v"
    assert not (d / "forward").exists() and read_flow_npz(d / "flow_backward.npz").shape == (3, 2, 32, 48)


def test_cli_per_input_failures_exit_1_with_a_summary(tmp_path, capsys, small_street):
    good = write_frames(tmp_path / "in" / "good", small_street.rgb[:2])
    write_frames(tmp_path / "in" / "single", small_street.rgb[:1])
    mixed = write_frames(tmp_path / "in" / "mixed", small_street.rgb[:2])
    cv2.imwrite(str(mixed / "00002.png"), np.zeros((20, 30, 3), np.uint8))
    code, out, err = run_cli(capsys, "flow", str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert code == 1
    assert "needs at least 2 frames" in err and "single" in err
    assert "30x20" in err and "64x48" in err  # the odd frame's size and the clip's
    assert "2 of 3 inputs failed" in err and out == ""
    assert (tmp_path / "out" / "good" / "meta.json").is_file() and good.is_dir()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good"]  # nothing half-written


@pytest.mark.parametrize("args, what", [
    (["--method", "raft"], "valid methods: dis, farneback, pwcnet"),
    (["--direction", "sideways"], "forward, backward, both"),
    (["--preset", "fast", "--method", "farneback"], "--preset applies to --method dis only"),
    (["--weights", "x.pt"], "--weights applies to --method pwcnet only"),
])
def test_cli_usage_errors_exit_2(tmp_path, capsys, small_street, args, what):
    clip = write_frames(tmp_path / "clip", small_street.rgb[:2])
    code, out, err = run_cli(capsys, "flow", str(clip), "--out", str(tmp_path / "o"), *args)
    assert code == 2 and what in err and out == ""
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_cli_pwcnet_without_weights_uses_the_bundled_model(tmp_path, capsys, small_street, monkeypatch):
    from vpcli.preprocess.pwcnet import DEFAULT_WEIGHTS
    from vpcli.weights import load_manifests
    monkeypatch.delenv("VPCLI_MANIFEST", raising=False)
    if DEFAULT_WEIGHTS not in load_manifests() or not load_manifests().get(DEFAULT_WEIGHTS).source.path.is_file():
        pytest.skip("the bundled PWC-Net weights are not installed")
    clip = write_frames(tmp_path / "clip", small_street.rgb[:3])
    code, _, err = run_cli(capsys, "flow", str(clip), "--out", str(tmp_path / "o"), "--method", "pwcnet")
    assert code == 0, err
    assert read_flow_npz(tmp_path / "o" / "clip" / "flow_forward.npz").shape == (2, 2, 48, 64)
    meta = json.loads((tmp_path / "o" / "clip" / "meta.json").read_text())
    assert meta["parameters"]["weights"] == DEFAULT_WEIGHTS and len(meta["parameters"]["weights_sha256"]) == 64


def test_cli_pwcnet_with_unavailable_weights_is_one_clear_line(tmp_path, capsys, small_street, monkeypatch):
    monkeypatch.delenv("VPCLI_MANIFEST", raising=False)
    clip = write_frames(tmp_path / "clip", small_street.rgb[:2])
    code, _, err = run_cli(capsys, "flow", str(clip), "--out", str(tmp_path / "o"), "--method", "pwcnet",
                           "--weights", "pwcnet-sniklaus")
    assert code == 1
    line, = err.strip().splitlines()
    assert "PWC-Net needs pretrained weights" in line and "network-default.pytorch" in line


def test_single_frame_error_from_the_library(tmp_path, small_street):
    from vpcli.engine.flow_runner import flow_clip
    clip = write_frames(tmp_path / "one", small_street.rgb[:1])
    with pytest.raises(VideoError, match="needs at least 2 frames"):
        flow_clip(clip, tmp_path / "o", registry.create("flow", "dis"))
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------
# Plausibility warning (issue 16: a model answered 50-420 px for a 2 px motion, silently)


def _constant_flow(u: float, v: float):
    """A stand-in backend (every backend goes through the same check): constant (u, v) everywhere."""
    from vpcli.preprocess import FlowEstimator

    class Constant(FlowEstimator):
        name = "constant"

        def _estimate(self, a, b):
            flow = np.empty((len(a), 2, *a.shape[1:3]), np.float32)
            flow[:, 0], flow[:, 1] = u, v
            return flow

    return Constant()


def test_far_share_counts_vectors_beyond_a_third_of_the_frame_and_non_finite():
    from vpcli.engine.flow_runner import far_share
    flows = np.zeros((3, 2, 30, 60), np.float32)
    flows[0, 0] = 21.0  # 21 / 60 = 0.35 of the width: far
    flows[1, 1] = 9.0   # 9 / 30 = 0.30 of the height: near
    flows[1, 1, :10] = np.nan  # a third of the pixels not finite: far
    flows[2, 0] = 19.0  # 0.32 of the width, but u and v combine: hypot(0.32, 0.13) = 0.34 > 1/3
    flows[2, 1] = 4.0
    np.testing.assert_allclose(far_share(flows), [1.0, 1 / 3, 1.0])


@pytest.mark.parametrize("direction", ["forward", "both"])
def test_implausible_flow_warns_once_per_direction_through_the_callback_and_in_meta(tmp_path, small_street,
                                                                                    direction):
    from vpcli.engine.flow_runner import flow_clip
    clip = write_frames(tmp_path / "clip", small_street.rgb)  # 48x64
    events = []
    record = flow_clip(clip, tmp_path / "o", _constant_flow(40.0, 2.0), direction=direction,
                       callback=lambda event, rec: events.append((event, rec)))
    warnings = [rec for event, rec in events if event == "warning"]
    assert len(warnings) == (2 if direction == "both" else 1)
    for w in warnings:
        assert w["input"] == str(clip) and w["message"].startswith(f"{clip}: ") and "\n" not in w["message"]
        assert "implausible for 48x64 (HxW) frames" in w["message"] and "3 of 3 pairs" in w["message"]
        assert "100%" in w["message"] and "40 px" in w["message"] and "--method dis" in w["message"]
    assert [e for e, _ in events][-1] == "done" and record["pairs"] == 3  # a warning, not a failure
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert [f"{clip}: {m}" for m in meta["warnings"]] == [w["message"] for w in warnings]
    # without a callback (library use) the same line is a Python warning
    from vpcli.engine.flow_runner import FlowWarning
    with pytest.warns(FlowWarning, match="looks implausible"):
        flow_clip(clip, tmp_path / "o2", _constant_flow(0.0, -30.0))


def test_plausible_flow_does_not_warn(tmp_path, small_street, dis):
    from vpcli.engine.flow_runner import flow_clip
    clip = write_frames(tmp_path / "clip", small_street.rgb)
    for name, est in (("dis", dis), ("const", _constant_flow(10.0, -5.0))):  # 10/64 and 5/48: near
        events = []
        flow_clip(clip, tmp_path / name, est, callback=lambda event, rec, seen=events: seen.append(event))
        assert "warning" not in events
        assert json.loads((tmp_path / name / "meta.json").read_text())["warnings"] == []


def test_one_implausible_pair_of_many_is_reported_with_its_count(tmp_path, small_street):
    from vpcli.engine.flow_runner import implausible_flow_message
    assert implausible_flow_message("forward", [0.0, 0.1, 0.5], 3.0, (48, 64), "dis") is None  # half is not most
    msg = implausible_flow_message("backward", [0.0, 0.9, 0.2], 120.4, (48, 64), "dis")
    assert msg.startswith("backward flow looks implausible") and "1 of 3 pairs" in msg and "90%" in msg
    assert "120 px" in msg and "check the input" in msg
