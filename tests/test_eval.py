"""`vpcli eval`: folder matching, best-of-N, statistics, outputs, and every bad-input message."""
from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from vpcli.cli.app import main
from vpcli.engine.evaluate import EvalWarning, RunningCurve, evaluate, select_best
from vpcli.io.video import write_video
from vpcli.metrics.fvd import SmallSampleWarning
from vpcli.metrics.psnr import psnr
from vpcli.predictors.base import Predictor, StepRecord


def run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def clip(seed: int, t: int = 4, h: int = 16, w: int = 16) -> np.ndarray:
    """A smooth random uint8 clip (T, H, W, 3): small, but SSIM's 11x11 window fits."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (1, h, w, 3)).astype(np.float32)
    drift = np.arange(t, dtype=np.float32)[:, None, None, None] * rng.uniform(-20, 20, (1, 1, 1, 3))
    return np.clip(base + drift, 0, 255).astype(np.uint8)


def noisy(frames: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(frames.astype(np.float32) + rng.normal(0, sigma, frames.shape), 0, 255).astype(np.uint8)


def save_npz(path: Path, **arrays) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def csv_rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- statistics

def test_select_best_follows_the_metric_direction():
    v = np.array([[1.0, 3.0], [5.0, 5.0], [0.0, np.nan]])  # 3 samples, 2 frames; means 2, 5, 0
    assert select_best(v, True)[:2] == (1, 5.0)
    k, score, curve = select_best(v, False)
    assert (k, score) == (2, 0.0) and np.isnan(curve[1])
    assert select_best(np.full((2, 3), np.nan), True)[0] == 0  # nothing defined: the first, NaN score


def test_running_curve_matches_numpy_and_student_t():
    from scipy import stats
    rng = np.random.default_rng(0)
    curves = [rng.normal(20, 3, 5) for _ in range(7)] + [np.array([19.0, np.nan, 21.0])]  # ragged, with a gap
    acc = RunningCurve()
    for c in curves:
        acc.add(float(np.nanmean(c)), c)
    s = acc.summary()
    seq = np.array([np.nanmean(c) for c in curves])
    assert s["n"] == 8 and s["mean"] == pytest.approx(seq.mean())
    assert s["ci95"] == pytest.approx(stats.t.ppf(0.975, 7) * seq.std(ddof=1) / math.sqrt(8))
    step1 = np.array([c[1] for c in curves[:7]])  # the last curve has no value at step 1
    assert s["curve"]["n"][:3] == [8, 7, 8] and s["curve"]["n"][3:] == [7, 7]
    assert s["curve"]["mean"][1] == pytest.approx(step1.mean())
    assert s["curve"]["ci95"][1] == pytest.approx(stats.t.ppf(0.975, 6) * step1.std(ddof=1) / math.sqrt(7))


# ----------------------------------------------------------------------------- folders

@pytest.fixture()
def identical(tmp_path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for i, name in enumerate(["a", "b", "sub/c"]):
        frames = clip(i)
        write_video(gt / name, frames)              # PNG frame folder (lossless)
        save_npz(pred / f"{name}.npz", frames=frames)  # the same frames as a uint8 stack
    return pred, gt


def test_identical_predictions_cap_psnr_and_give_ssim_1(capsys, tmp_path, identical):
    pred, gt = identical
    code, out, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--metric", "psnr,ssim,mse",
                         "--out", tmp_path / "e")
    assert code == 0, err
    r = results(tmp_path / "e")
    p, s = r["metrics"]["psnr"], r["metrics"]["ssim"]
    assert p["mean"] == 100.0 and p["capped"] is True and p["capped_frames"] == 12 and p["cap_db"] == 100.0
    assert "12 of 12 frames were identical" in p["note"] and "100 dB" in p["note"]
    assert s["mean"] == pytest.approx(1.0, abs=1e-6) and r["metrics"]["mse"]["mean"] == 0.0
    assert p["curve"]["t"] == [1, 2, 3, 4] and p["curve"]["mean"] == [100.0] * 4
    assert r["sequences"] == 3 and r["inputs"]["mode"] == "folders" and "versions" in r and "torch" in r["versions"]
    assert "folders: predictions matched" in r["protocol"]
    rows = csv_rows(tmp_path / "e")
    assert len(rows) == 9 and {row["sequence"] for row in rows} == {"a", "b", "sub/c"}
    for name in ("plot_psnr.png", "plot_ssim.png", "plot_mse.png", "best.mp4", "worst.mp4"):
        assert (tmp_path / "e" / name).stat().st_size > 0, name
    assert "12 frames capped at 100 dB" in out and "psnr" in out and "ssim" in out


def test_best_of_n_over_sample_files_keeps_the_best_sample(capsys, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    truth = clip(5, t=6)
    write_video(gt / "x.mp4", truth, lossless=True)  # libx264rgb -qp 0: bit-exact
    levels = [30.0, 4.0, 15.0]  # sample_001 is the closest to the truth
    for k, sigma in enumerate(levels):
        save_npz(pred / "x" / f"sample_{k:03d}.npz", frames=noisy(truth, sigma, seed=k))
    write_video(pred / "x" / "composite.mp4", truth)  # beside samples: ignored, listed
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--metric", "psnr,mse,ssim", "--out", tmp_path / "e")
    assert code == 0, err
    rows = {row["metric"]: row for row in csv_rows(tmp_path / "e")}
    assert all(rows[m]["best_sample"] == "1" and rows[m]["samples"] == "3" for m in ("psnr", "mse", "ssim"))
    t = torch.from_numpy(truth).permute(0, 3, 1, 2)[None].float() / 255
    per_sample = [float(psnr(torch.from_numpy(noisy(truth, s, seed=k)).permute(0, 3, 1, 2)[None].float() / 255, t)
                        .mean()) for k, s in enumerate(levels)]
    assert float(rows["psnr"]["value"]) == pytest.approx(max(per_sample), rel=1e-5)
    assert float(rows["psnr"]["mean_over_samples"]) == pytest.approx(np.mean(per_sample), rel=1e-5)
    r = results(tmp_path / "e")
    assert r["inputs"]["ignored"] == ["x/composite"] and r["inputs"]["samples_per_sequence"] == [3]
    assert r["extremes"]["best"]["sample"] == 1


def test_gt_offset_skips_context_and_align_truncates_with_a_warning(capsys, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    frames = clip(1, t=7)
    write_video(gt / "a", frames)
    save_npz(pred / "a.npz", frames=frames[3:])  # 4 predicted frames after 3 context frames
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--gt-offset", "3", "--out", tmp_path / "e1")
    assert code == 0, err
    r = results(tmp_path / "e1")
    assert r["metrics"]["psnr"]["mean"] == 100.0 and r["metrics"]["psnr"]["curve"]["t"] == [4, 5, 6, 7]

    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e2")
    assert code == 1 and (tmp_path / "e2").exists() is False
    assert "length mismatch for 'a'" in err and f"{pred / 'a.npz'} has 4 frames" in err
    assert f"ground truth {gt / 'a'} has 7" in err and "--align" in err and len(err.strip().splitlines()) == 1

    with pytest.warns(EvalWarning, match="length mismatch for 'a'.*compared the first 4 frames"):
        code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--align", "--out", tmp_path / "e3")
    assert code == 0, err
    r = results(tmp_path / "e3")
    assert r["metrics"]["psnr"]["curve"]["n"] == [1, 1, 1, 1] and "compared the first 4 frames" in r["warnings"][0]


def test_size_mismatch_names_both_files_and_sizes(capsys, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_video(gt / "a", clip(1, h=16, w=24))
    save_npz(pred / "a.npz", frames=clip(1, h=16, w=16))
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e")
    assert code == 1
    assert f"prediction {pred / 'a.npz'} is 16x16 (HxW) but ground truth {gt / 'a'} is 16x24 (HxW)" in err
    with pytest.warns(EvalWarning, match=r"resized the prediction \(--align\)"):
        code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--align", "--out", tmp_path / "e")
    assert code == 0, err


def test_unmatched_names_are_listed_on_both_sides(capsys, tmp_path, identical):
    pred, gt = identical
    (pred / "b.npz").unlink()
    save_npz(pred / "extra.npz", frames=clip(9))
    code, out, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e")
    assert code == 1 and out == ""
    assert "1 ground-truth clips without a prediction: b" in err
    assert "1 predicted clips without ground truth: extra" in err
    assert "relative path without extension" in err and not (tmp_path / "e").exists()


def test_missing_folder_and_duplicate_names(capsys, tmp_path, identical):
    pred, gt = identical
    code, _, err = run(capsys, "eval", "--pred", tmp_path / "nope", "--gt", gt, "--out", tmp_path / "e")
    assert code == 1 and f"--pred {tmp_path / 'nope'} does not exist" in err
    save_npz(gt / "a.npz", frames=clip(0))  # gt/a/ (frames) and gt/a.npz: one name, two clips
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e")
    assert code == 1 and "have more than one clip: a (" in err


def test_nan_frames_in_npz_are_refused_with_the_frame_index(capsys, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    frames = clip(2).astype(np.float32) / 255
    save_npz(gt / "a.npz", frames=frames)
    bad = frames.copy()
    bad[2, 3, 4, 0] = np.nan
    save_npz(pred / "a.npz", frames=bad)
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e")
    assert code == 1 and f"{pred / 'a.npz'} holds NaN or Inf in frame(s) 2 (1 of 4 frames)" in err


def test_unknown_metric_exits_2_listing_valid_names(capsys, tmp_path, identical):
    pred, gt = identical
    code, out, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--metric", "psnr,ssmi", "--out", tmp_path / "e")
    assert code == 2 and out == ""
    assert "unknown metric 'ssmi'" in err and "did you mean 'ssim'" in err
    assert "valid metrics: bce, csim, epe, fvd, lpips, mae, miou, ms-ssim, ms-ssim-3, mse, psnr, ssim" in err


def test_fvd_with_too_few_videos_surfaces_the_metric_message(capsys, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_video(gt / "only", clip(1, t=10))
    save_npz(pred / "only.npz", frames=clip(1, t=10))
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--metric", "psnr,fvd", "--untrained-metrics",
                       "--out", tmp_path / "e")
    assert code == 1 and "FVD needs at least 2 videos per set; got pred=1, target=1" in err


def test_lpips_needs_weights_and_says_how_to_pass_them(capsys, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    frames = clip(3, t=2, h=64, w=64)
    write_video(gt / "a", frames)
    save_npz(pred / "a.npz", frames=frames)
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--metric", "lpips", "--out", tmp_path / "e")
    assert code == 1 and "LPIPS-alex needs weights 'lpips-alex'" in err
    assert "--metric-weights lpips=FILE_OR_NAME, or --untrained-metrics" in err
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--metric", "lpips", "--untrained-metrics",
                       "--out", tmp_path / "e")
    assert code == 0, err
    m = results(tmp_path / "e")["metrics"]["lpips"]
    assert m["mean"] == pytest.approx(0.0, abs=1e-6) and m["higher_is_better"] is False  # identical frames
    assert "NOT comparable" in m["settings"]["weights"]


def test_existing_output_is_refused_unless_overwrite(capsys, tmp_path, identical):
    pred, gt = identical
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "keep.txt").write_text("x")
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e")
    assert code == 1 and "already exists" in err and "--overwrite" in err
    assert (tmp_path / "e" / "keep.txt").exists()
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e", "--overwrite")
    assert code == 0 and not (tmp_path / "e" / "keep.txt").exists() and (tmp_path / "e" / "results.json").exists()


def test_miou_over_npz_label_stacks(capsys, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[:, :, 4:] = 13  # car on the right half
    save_npz(gt / "a.labels.npz", labels=labels)   # a companion stack
    save_npz(gt / "b.npz", labels=labels)
    wrong = labels.copy()
    wrong[:, :, :4] = 13  # all car: IoU car 0.5, road 0 -> mIoU 0.25
    save_npz(pred / "a.npz", labels=labels)
    save_npz(pred / "b" / "sample_000.npz", labels=wrong)
    save_npz(pred / "b" / "sample_001.npz", labels=labels)
    code, out, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--metric", "miou", "--out", tmp_path / "e",
                         "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [x["event"] for x in lines] == ["sequence", "sequence", "summary"]
    assert lines[1]["metrics"]["miou"] == 1.0 and lines[1]["best_sample"]["miou"] == 1
    m = results(tmp_path / "e")["metrics"]["miou"]
    assert m["mean"] == 1.0 and m["dataset_miou"] == 1.0 and (tmp_path / "e" / "best.mp4").exists()
    code, _, err = run(capsys, "eval", "--pred", pred / "b" / "sample_000.npz", "--gt", gt / "b.npz",
                       "--metric", "miou", "--out", tmp_path / "e2")
    assert code == 0 and results(tmp_path / "e2")["metrics"]["miou"]["mean"] == pytest.approx(0.25)


def test_fvd_over_a_folder_streams_embeddings(capsys, tmp_path, monkeypatch):
    """The evaluator's FVD plumbing (one embedding per video as clips stream past, then the
    Fréchet distance); I3D itself is tested in test_metrics_fvd.py and costs ~4 s per video here,
    so the embedding is replaced by cheap per-channel statistics."""
    from vpcli.metrics.fvd import FVD
    seen = []

    def features(self, videos):  # N,T,C,H,W -> N,6 float64
        seen.append(tuple(videos.shape))
        return torch.cat([videos.mean(dim=(1, 3, 4)), videos.std(dim=(1, 3, 4))], dim=1).double()

    monkeypatch.setattr(FVD, "features", features)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for i in range(3):
        write_video(gt / f"c{i}", clip(i, t=9))
        save_npz(pred / f"c{i}.npz", frames=noisy(clip(i, t=9), 10))
    with pytest.warns(SmallSampleWarning, match="biased upwards"):
        code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--metric", "fvd", "--untrained-metrics",
                           "--out", tmp_path / "e")
    assert code == 0, err
    r = results(tmp_path / "e")
    f = r["metrics"]["fvd"]
    assert f["kind"] == "video_set" and f["n"] == 3 and f["n_real"] == 3 and f["value"] > 0
    assert seen == [(1, 9, 3, 16, 16)] * 6  # one video at a time, predictions and ground truth
    assert "NOT comparable" in f["settings"]["weights"]
    assert any("biased upwards" in w for w in r["warnings"]) and not (tmp_path / "e" / "plot_fvd.png").exists()


# ----------------------------------------------------------------------------- the predictor protocol

@dataclass
class OffsetConfig:
    context: int = 2


class RandomOffset(Predictor):
    """Sample s = last context frame + a random brightness offset drawn from the generator: the
    closer the offset is to 0, the better the sample, so best-of-N has something to choose."""

    name = "test-eval-offset"

    def train_steps(self):
        return []

    @torch.no_grad()
    def predict(self, context, horizon, samples=1, generator=None, *, want_extras=False) -> Iterator[StepRecord]:
        last = context["rgb"][:, -1]  # B,C,H,W
        b = last.shape[0]
        offsets = torch.rand(b, samples, 1, 1, 1, generator=generator) * 0.4 - 0.2  # B,S,1,1,1
        for _ in range(horizon):
            yield StepRecord(frames=(last[:, None] + offsets).clamp(0, 1))


@pytest.fixture()
def offset_method(monkeypatch) -> str:
    """Register RandomOffset for one test only, so registry-wide contract tests never see it."""
    from vpcli import registry
    registry.ensure_loaded("predictor")
    entry = registry.Entry("predictor", "test-eval-offset", RandomOffset, OffsetConfig, "test only")
    monkeypatch.setitem(registry._REGISTRY["predictor"], entry.name, entry)
    return entry.name


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder as `vpcli train --config convlstm-mmnist-tiny` writes it (random weights, no training)."""
    from vpcli.engine.run import resolve_config
    from vpcli.registry import get
    cfg = resolve_config(None, "convlstm-mmnist-tiny", ["data.future=3"])
    torch.manual_seed(0)
    model = get("predictor", cfg.method).builder(cfg.model_config())
    run = tmp_path_factory.mktemp("run")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (run / "checkpoints").mkdir()
    save_file(model.state_dict(), str(run / "checkpoints" / "last.safetensors"))
    return run


def test_copy_last_protocol_matches_a_direct_computation(tmp_path):
    from vpcli.data.clips import make_dataset
    r = evaluate(method="copy-last", data="synthetic:moving-digits", samples=2, context=3, horizon=4, num_sequences=3,
                 metric="psnr", out=tmp_path / "e", batch_size=2)
    ds = make_dataset("synthetic:moving-digits", split="test", context=3, future=4, channels=3, num_clips=3, seed=0)
    values = []
    for i in range(3):
        rgb = ds[i]["rgb"][None]  # 1,T,C,H,W
        pred = rgb[:, 2:3].expand(1, 4, *rgb.shape[2:])
        values.append(psnr(pred, rgb[:, 3:7])[0].numpy())
    values = np.stack(values)  # 3 sequences, 4 steps
    m = r["metrics"]["psnr"]
    assert m["mean"] == pytest.approx(values.mean(), rel=1e-5) and m["n"] == 3
    assert m["curve"]["mean"] == pytest.approx(list(values.mean(axis=0)), rel=1e-5) and m["curve"]["t"] == [4, 5, 6, 7]
    assert r["inputs"]["context"] == 3 and r["inputs"]["horizon"] == 4 and r["inputs"]["weights"]["path"] is None
    # copy-last is deterministic: its 2 samples would be identical, so one is scored, and the run says so
    assert "best of 1" in r["protocol"] and "3 context frames are encoded once" in r["protocol"]
    assert r["inputs"]["samples"] == 1
    assert any("copy-last is deterministic: its 2 samples would be identical; scoring one" in w for w in r["warnings"])


def test_best_of_n_per_sequence_and_metric_with_a_stochastic_predictor(tmp_path, offset_method):
    kw = {"method": offset_method, "data": "synthetic:moving-digits", "context": 2, "horizon": 3,
          "num_sequences": 4, "metric": "psnr,mse", "batch_size": 3, "seed": 7}
    r1 = evaluate(samples=1, out=tmp_path / "one", videos=False, **kw)
    r8 = evaluate(samples=8, out=tmp_path / "eight", **kw)
    again = evaluate(samples=8, out=tmp_path / "again", videos=False, plots=False, **kw)
    assert r8["metrics"] == again["metrics"]  # same seed and batch size: same samples
    assert r8["metrics"]["psnr"]["mean"] > r1["metrics"]["psnr"]["mean"]
    assert r8["metrics"]["mse"]["mean"] < r1["metrics"]["mse"]["mean"]  # lower is better for mse
    rows = csv_rows(tmp_path / "eight")
    by_seq: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_seq.setdefault(row["sequence"], {})[row["metric"]] = row
    assert len(by_seq) == 4
    for seq in by_seq.values():  # the brightest-closest sample wins both metrics, whatever its index
        assert seq["psnr"]["best_sample"] == seq["mse"]["best_sample"]
        assert float(seq["psnr"]["value"]) >= float(seq["psnr"]["mean_over_samples"])
        assert float(seq["mse"]["value"]) <= float(seq["mse"]["mean_over_samples"])
    assert len({seq["psnr"]["best_sample"] for seq in by_seq.values()}) > 1  # a real choice per sequence
    assert (tmp_path / "eight" / "best.mp4").exists() and (tmp_path / "eight" / "worst.mp4").exists()


def test_run_folder_and_checkpoint_weights(capsys, tmp_path, run_dir):
    code, out, err = run(capsys, "eval", "--weights", run_dir, "--samples", "2", "--num-sequences", "3",
                         "--out", tmp_path / "e", "--json")
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["event"] == "summary" and summary["sequences"] == 3
    r = results(tmp_path / "e")
    i = r["inputs"]
    assert i["method"] == "convlstm" and i["context"] == 5 and i["horizon"] == 3 and i["size"] == [32, 32]
    assert i["channels"] == 1 and i["weights"]["path"].endswith("last.safetensors")
    assert len(i["weights"]["sha256"]) == 64
    # The checkpoint file alone finds config.yaml in its run folder; --horizon overrides the config.
    ckpt = run_dir / "checkpoints" / "last.safetensors"
    code, _, err = run(capsys, "eval", "--weights", ckpt, "--samples", "1", "--num-sequences", "2", "--horizon", "2",
                       "--out", tmp_path / "e2")
    assert code == 0, err
    assert results(tmp_path / "e2")["metrics"]["psnr"]["curve"]["t"] == [6, 7]


def test_manifest_name_as_weights(tmp_path, run_dir, monkeypatch):
    from vpcli.api import export_weights
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    exported = export_weights(run, "tiny-convlstm-test")
    monkeypatch.setenv("VPCLI_MANIFEST", exported["manifest"])
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path / "cache"))
    r = evaluate(weights="tiny-convlstm-test", samples=1, num_sequences=2, metric="psnr", out=tmp_path / "e",
                 videos=False)
    w = r["inputs"]["weights"]
    assert w["name"] == "tiny-convlstm-test" and w["sha256"] == exported["sha256"]
    assert r["inputs"]["method"] == "convlstm" and r["inputs"]["horizon"] == 3 and r["inputs"]["size"] == [32, 32]


@pytest.mark.parametrize("args, code, text", [
    (["--method", "convlstm"], 2, "convlstm has trained parameters: pass --weights"),
    (["--method", "copy-last", "--weights", "RUN"], 2,
     "--method copy-last does not match the weights, which are 'convlstm'"),
    (["--weights", "no/such/run"], 1, "weights no/such/run do not exist"),
    (["--method", "nosuch"], 2, "unknown predictor 'nosuch'"),
    (["--method", "copy-last", "--metric", "miou"], 2, "miou scores predicted labels, and copy-last predicts frames"),
    (["--method", "copy-last", "--metric", "epe"], 2, "epe scores predicted flow, and copy-last predicts frames"),
    (["--method", "copy-last", "--pred", "x"], 2, "two different modes"),
    ([], 2, "nothing to evaluate"),
])
def test_protocol_usage_errors(capsys, tmp_path, run_dir, args, code, text):
    args = [str(run_dir) if a == "RUN" else a for a in args]
    got, _, err = run(capsys, "eval", *args, "--out", tmp_path / "e")
    assert got == code and text in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "e").exists()


def test_run_folder_without_checkpoint(capsys, tmp_path, run_dir):
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    shutil.rmtree(broken / "checkpoints")
    code, _, err = run(capsys, "eval", "--weights", broken, "--out", tmp_path / "e")
    assert code == 1 and "has no checkpoints/best.safetensors or last.safetensors" in err


@pytest.fixture(scope="module")
def slamp_run(tmp_path_factory) -> Path:
    from test_predict import SLAMP_TINY, make_run
    return make_run(tmp_path_factory.mktemp("slamp") / "run", "slamp-mmnist-tiny", SLAMP_TINY + ["data.future=3"],
                    gain=True)


def test_heads_score_the_components_of_the_same_rollout(tmp_path, slamp_run):
    """--head static/dynamic/average (SLAMP Table 7) score x^p, x^f and their mean from the rollout
    that feeds back the fused frame; checked against the components of a direct predict call."""
    from vpcli.data.clips import make_dataset
    from vpcli.engine.evaluate.protocol import _seed_for, load_predictor
    kw = {"weights": str(slamp_run), "num_sequences": 2, "samples": 3, "metric": "psnr", "batch_size": 2,
          "seed": 5, "videos": False, "plots": False}
    got = {h: evaluate(head=h, out=tmp_path / h, **kw) for h in ("fused", "static", "dynamic", "average")}
    assert got["static"]["inputs"]["head"] == "static"
    model = load_predictor(None, str(slamp_run), [], "cpu").model
    ds = make_dataset("synthetic:moving-digits", split="test", context=3, future=3, channels=1, num_clips=2,
                      size=(64, 64), seed=0)
    rgb = torch.stack([ds[0]["rgb"], ds[1]["rgb"]])
    gen = torch.Generator().manual_seed(_seed_for(5, 0))
    per_head: dict[str, list[torch.Tensor]] = {h: [] for h in got}
    with torch.inference_mode():
        for rec in model.predict({"rgb": rgb[:, :3]}, 3, 3, gen, want_extras=True):
            parts = rec.extras
            per_head["fused"].append(rec.frames)
            per_head["static"].append(parts["pixel"].clamp(0, 1))
            per_head["dynamic"].append(parts["warped"].clamp(0, 1))
            per_head["average"].append(((parts["pixel"] + parts["warped"]) / 2).clamp(0, 1))
    for h, steps in per_head.items():
        pred = torch.stack(steps, 2)  # B,S,T,C,H,W
        gt = rgb[:, None, 3:6].expand_as(pred)
        v = psnr(pred.reshape(-1, *pred.shape[2:]), gt.reshape(-1, *gt.shape[2:])).view(2, 3, 3).mean(-1)
        expected = v.max(dim=1).values.mean().item()  # best of 3 per sequence, mean over sequences
        assert got[h]["metrics"]["psnr"]["mean"] == pytest.approx(expected, rel=1e-5), h
    assert len({round(r["metrics"]["psnr"]["mean"], 6) for r in got.values()}) == 4  # four different scores


def test_head_needs_a_predictor_with_components(capsys, tmp_path, identical):
    code, _, err = run(capsys, "eval", "--method", "copy-last", "--data", "synthetic:moving-digits", "--head", "static",
                       "--num-sequences", "1", "--samples", "1", "--out", tmp_path / "e")
    assert code == 2 and "copy-last has no head 'static' to score (hint: heads of copy-last: fused)" in err
    code, _, err = run(capsys, "eval", "--pred", identical[0], "--gt", identical[1], "--head", "dynamic",
                       "--out", tmp_path / "f")
    assert code == 2 and "predictions on disk have none" in err
    code, _, err = run(capsys, "eval", "--method", "copy-last", "--head", "statik", "--out", tmp_path / "g")
    assert code == 2 and "copy-last has no head 'statik' to score" in err
    assert not (tmp_path / "e").exists() and not (tmp_path / "f").exists()


# ----------------------------------------------------------------------------- what vpcli writes, scored as it is

def predict_meta(folder: Path, *, start: int, context: int, horizon: int, source_frames: int,
                 size=None, source_size=None, conversions=()) -> None:
    """The meta.json fields of `vpcli predict` that eval reads (vpcli/engine/predict_runner.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"command": "predict", "input": "clips/a.mp4", "source": {"frames": source_frames},
            "context": {"frames": context, "indices": list(range(start, start + context)), "start": start},
            "first_predicted_frame": start + context, "horizon": horizon, "conversions": list(conversions)}
    if size is not None:
        meta.update(size=list(size), source_size=list(source_size))
    (folder / "meta.json").write_text(json.dumps(meta))


def test_converted_folders_are_clips_named_after_the_folder(capsys, tmp_path):
    """`vpcli data convert` writes NAME/video.mp4 + meta.json: one input / ground truth named NAME."""
    from vpcli.io.sources import collect_inputs
    gt, pred = tmp_path / "converted", tmp_path / "pred"
    for name in ("a", "b"):
        write_video(gt / name / "video.mp4", clip(1, t=5), lossless=True)
        (gt / name / "meta.json").write_text('{"command": "data convert"}')
        save_npz(pred / name / "sample_000.npz", frames=clip(1, t=5))
    assert [(p.relative_to(gt).as_posix(), n) for p, n in collect_inputs([gt])] == [("a/video.mp4", "a"),
                                                                                     ("b/video.mp4", "b")]
    assert collect_inputs([gt / "a"])[0][1] == "a" and collect_inputs([gt / "a" / "video.mp4"])[0][1] == "a"
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e")
    assert code == 0, err
    r = results(tmp_path / "e")
    assert r["sequences"] == 2 and r["metrics"]["psnr"]["mean"] == 100.0


def test_meta_json_sets_the_offset_and_the_context_is_never_scored(capsys, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    frames = clip(4, t=8)
    write_video(gt / "a", frames)
    predict_meta(pred / "a", start=1, context=2, horizon=3, source_frames=8)  # context 1..2, predicted 3..5
    save_npz(pred / "a" / "sample_000.npz", frames=frames[3:6])
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e")
    assert code == 0, err
    r = results(tmp_path / "e")
    assert r["metrics"]["psnr"]["mean"] == 100.0 and r["metrics"]["psnr"]["curve"]["t"] == [4, 5, 6]
    assert r["inputs"]["gt_offset"] == "from meta.json" and r["inputs"]["gt_offsets"] == {"a": 3}
    assert "meta.json" in r["protocol"] and r["warnings"] == []  # frames 6..7 are simply not predicted

    # --gt-offset 2: predicted frame 0 against context frame 2 -> usage error, one line, nothing written
    code, out, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--gt-offset", "2", "--out", tmp_path / "e2")
    assert code == 2 and out == "" and not (tmp_path / "e2").exists() and len(err.strip().splitlines()) == 1
    assert ("--gt-offset 2 would score context frames, 'a': predicted frames 0 against its context frames 2 "
            "(meta.json: context 1..2, first predicted frame 3)") in err
    assert "drop --gt-offset" in err and "--gt-offset 3" in err
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--gt-offset", "0", "--out", tmp_path / "e2")
    assert code == 2 and "predicted frames 1..2 against its context frames 1..2" in err

    # an offset past the context is scored as asked, with a warning
    with pytest.warns(EvalWarning, match=r"--gt-offset 4: 1 prediction\(s\) start at another frame.*'a' from frame 3"):
        code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--gt-offset", "4", "--out", tmp_path / "e3")
    assert code == 0, err
    assert results(tmp_path / "e3")["metrics"]["psnr"]["curve"]["t"] == [5, 6, 7]

    # a ground truth holding only the predicted frames (not the 8-frame clip predicted from): offset 0
    shutil.rmtree(gt / "a")
    save_npz(gt / "a.npz", frames=frames[3:6])
    with pytest.warns(EvalWarning, match=r"'a' 3 frames, predicted from 8\): taken as the predicted frames only"):
        code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e4")
    assert code == 0, err
    assert results(tmp_path / "e4")["metrics"]["psnr"]["mean"] == 100.0


def test_predictions_past_the_end_of_the_clip(capsys, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    frames = clip(5, t=6)
    write_video(gt / "a", frames)
    predict_meta(pred / "a", start=2, context=2, horizon=4, source_frames=6)  # predicted 4..7, clip ends at 5
    save_npz(pred / "a" / "sample_000.npz", frames=np.concatenate([frames[4:], frames[:2]]))
    with pytest.warns(EvalWarning, match=r"1 prediction\(s\) run past the end.*'a' 2 of 4 predicted frames"):
        code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e")
    assert code == 0, err
    assert results(tmp_path / "e")["metrics"]["psnr"]["curve"]["n"] == [1, 1]

    predict_meta(pred / "a", start=4, context=2, horizon=4, source_frames=6)  # the default: the last frames
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e2")
    assert code == 1 and "has no frames from frame 6 on, the first one predict predicted" in err
    assert "predict with --start S" in err


def test_vpcli_predictions_at_another_size_are_scored_at_their_size(capsys, tmp_path):
    import cv2
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    frames = clip(6, t=5, h=32, w=48)
    write_video(gt / "a", frames)
    small = np.stack([cv2.resize(f, (24, 16), interpolation=cv2.INTER_AREA) for f in frames[2:]])
    save_npz(pred / "a" / "sample_000.npz", frames=noisy(small, 8))
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e")  # no meta.json
    assert code == 1 and "size mismatch for 'a'" in err and "--align" in err

    predict_meta(pred / "a", start=0, context=2, horizon=3, source_frames=5)
    with pytest.warns(EvalWarning, match=r"scored 1 prediction\(s\) made by vpcli at their own size: ground truth "
                                         r"resized to it \(same aspect ratio; meta.json\), e.g. 'a' 32x48 -> 16x24"):
        code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e")
    assert code == 0, err
    want = psnr(torch.from_numpy(noisy(small, 8)).permute(0, 3, 1, 2)[None].float() / 255,
                torch.from_numpy(small).permute(0, 3, 1, 2)[None].float() / 255).mean()
    assert results(tmp_path / "e")["metrics"]["psnr"]["mean"] == pytest.approx(float(want), abs=0.2)

    # another aspect ratio: only when predict --resize made exactly that change
    squash = np.stack([cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA) for f in frames[2:]])
    save_npz(pred / "a" / "sample_000.npz", frames=squash)
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e2")
    assert code == 1 and "is 16x16 (HxW) but ground truth" in err
    predict_meta(pred / "a", start=0, context=2, horizon=3, source_frames=5, size=(16, 16), source_size=(32, 48),
                 conversions=["resized 32x48 -> 16x16"])
    with pytest.warns(EvalWarning, match=r"as vpcli predict --resize resized the context"):
        code, _, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--out", tmp_path / "e2")
    assert code == 0, err
    assert results(tmp_path / "e2")["metrics"]["psnr"]["mean"] > 40  # the same resize, rounding apart


def test_segment_labels_and_predicted_labels_score_miou(capsys, tmp_path):
    """`vpcli segment` writes NAME/labels/*.png (+ labels.npz, overlay.mp4); predict NAME/sample_K.labels/."""
    from vpcli.io.labels import write_label_folder, write_labels_npz
    seg, pred = tmp_path / "seg", tmp_path / "pred"
    labels = np.zeros((6, 8, 8), np.uint8)
    labels[:, :, 4:] = 13
    write_label_folder(seg / "a" / "labels", labels)
    write_labels_npz(seg / "a" / "labels.npz", labels)
    write_video(seg / "a" / "overlay.mp4", np.zeros((6, 8, 8, 3), np.uint8))  # not a clip of its own
    (seg / "a" / "meta.json").write_text('{"command": "segment", "source": {"frames": 6}}')
    predict_meta(pred / "a", start=0, context=2, horizon=4, source_frames=6)
    write_label_folder(pred / "a" / "sample_000.labels", labels[2:])
    write_video(pred / "a" / "labels_sample_000.mp4", np.zeros((4, 8, 8, 3), np.uint8))  # ignored
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", seg, "--metric", "miou", "--out", tmp_path / "e")
    assert code == 0, err
    r = results(tmp_path / "e")
    assert r["metrics"]["miou"]["mean"] == 1.0 and r["inputs"]["gt_offsets"] == {"a": 2}
    assert r["metrics"]["miou"]["curve"]["t"] == [3, 4, 5, 6]


def test_flow_folders_score_epe(capsys, tmp_path):
    """Ground truth: a synth-street sequence's flow_forward.npz; predictions: `vpcli flow`'s NAME/forward/*.flo
    (frame t -> t+1) or predict's NAME/sample_K.flow/ (the previous frame -> predicted frame t)."""
    from vpcli.io.flow import write_flo_folder, write_flow_npz
    street, flow, pred = tmp_path / "street", tmp_path / "flow", tmp_path / "pred"
    rng = np.random.default_rng(0)
    truth = rng.normal(0, 2, (5, 2, 8, 12)).astype(np.float32)  # 6 frames, 5 pairs
    write_video(street / "s" / "frames", clip(0, t=6, h=8, w=12))
    write_flow_npz(street / "s" / "flow_forward.npz", truth)
    (street / "s" / "meta.json").write_text("{}")
    write_flo_folder(flow / "s" / "forward", truth + np.float32(0.5))  # off by (0.5, 0.5): EPE sqrt(0.5)
    (flow / "s" / "meta.json").write_text('{"command": "flow", "source": {"frames": 6}}')
    code, _, err = run(capsys, "eval", "--pred", flow, "--gt", street, "--metric", "epe", "--out", tmp_path / "e")
    assert code == 0, err
    m = results(tmp_path / "e")["metrics"]["epe"]
    assert m["mean"] == pytest.approx(np.sqrt(0.5), rel=1e-5) and m["n"] == 1 and m["unit"] == "px"

    predict_meta(pred / "s", start=0, context=3, horizon=2, source_frames=6)  # predicts frames 3, 4
    write_flo_folder(pred / "s" / "sample_000.flow", truth[2:4])  # flows 2->3 and 3->4
    code, _, err = run(capsys, "eval", "--pred", pred, "--gt", street, "--metric", "epe", "--out", tmp_path / "e2")
    assert code == 0, err
    assert results(tmp_path / "e2")["metrics"]["epe"]["mean"] == pytest.approx(0.0, abs=1e-6)


def test_a_metric_without_weights_is_listed_and_the_others_are_kept(capsys, tmp_path, identical, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # i3d-kinetics400 (git blob SHA-1) would be fetched implicitly
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path / "cache"))
    pred, gt = identical
    code, out, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--metric", "psnr,lpips,ssim",
                         "--out", tmp_path / "e")
    assert code == 1
    r = results(tmp_path / "e")
    assert list(r["metrics"]) == ["psnr", "ssim"] and r["metrics"]["psnr"]["mean"] == 100.0
    (miss,) = r["missing"]
    assert miss["metric"] == "lpips" and miss["weights"] == "lpips-alex"
    assert "LPIPS-alex needs weights 'lpips-alex'" in miss["reason"]
    assert miss["enable"].startswith("vpcli weights download lpips-alex") and "--metric-weights lpips=FILE" in miss["enable"]
    lines = [line for line in err.splitlines() if "not computed" in line]
    assert len(lines) == 1 and lines[0].startswith("error: lpips not computed: LPIPS-alex needs weights")
    assert "(to enable: vpcli weights download lpips-alex, or --metric-weights lpips=FILE" in lines[0]
    assert "psnr" in out and "not computed (reason below)" in out

    code, out, err = run(capsys, "eval", "--pred", pred, "--gt", gt, "--metric", "psnr,fvd,csim", "--json",
                         "--out", tmp_path / "e2")
    assert code == 1
    summary = json.loads(out.splitlines()[-1])
    assert summary["event"] == "summary" and list(summary["metrics"]) == ["psnr"]
    assert [m["metric"] for m in summary["missing"]] == ["fvd", "csim"]
    assert sum("not computed" in line for line in err.splitlines()) == 2


def test_missing_weights_name_the_download_when_the_manifest_knows_them(monkeypatch):
    from vpcli.engine.evaluate import metrics as em
    from vpcli.errors import WeightsError
    monkeypatch.setattr(em, "_in_manifest", lambda name: name == "i3d-kinetics400")
    e = em.missing_entry("fvd", WeightsError("FVD (I3D) needs weights 'i3d-kinetics400': offline", "x"), None)
    assert e["enable"].startswith("vpcli weights download i3d-kinetics400") and e["reason"].endswith("offline")
    e = em.missing_entry("lpips", WeightsError("no", "y"), "my.safetensors", lpips_net="vgg")
    assert e["weights"] == "my.safetensors" and "--metric-weights lpips=FILE holding the LPIPS heads with the vgg" in e["enable"]


def test_native_channels_of_generators_and_folders(tmp_path):
    from vpcli.data.clips import native_channels
    assert native_channels("synthetic:moving-digits") == 1
    assert native_channels("synthetic:moving-digits?channels=3") == 3
    assert native_channels("synthetic:synth-street") == 3
    assert native_channels("synthetic:camera-motion?grayscale=true") == 1
    write_video(tmp_path / "rgb" / "a.mp4", clip(0, t=6, h=32, w=32), fps=10)
    grey = np.repeat(clip(1, t=6, h=32, w=32)[..., :1], 3, axis=3)
    write_video(tmp_path / "grey" / "a.mp4", grey, fps=10)
    assert native_channels(tmp_path / "rgb") == 3 and native_channels(tmp_path / "grey") == 1
    assert native_channels(tmp_path / "missing") is None and native_channels("synthetic:nope") is None


def test_without_weights_the_default_matches_the_datas_channels(tmp_path):
    """An RGB folder gets the RGB default (as predict picks it), not the first entry, which is the
    greyscale digits model: before, eval scored RGB street clips as grey 64x64 digits frames."""
    write_video(tmp_path / "rgb" / "a.mp4", clip(0, t=6, h=64, w=64), fps=10)
    events: list[tuple[str, dict]] = []
    r = evaluate(method="slamp", data=tmp_path / "rgb", split="all", samples=1, context=4, horizon=1,
                 metric="psnr", out=tmp_path / "e", callback=lambda e, rec: events.append((e, rec)))
    assert r["inputs"]["weights"]["name"] == "slamp-real" and r["inputs"]["channels"] == 3
    said = [rec["message"] for e, rec in events if e == "warning"]
    assert said == ["no --weights given: using slamp-real, the bundled slamp weights for RGB clips made for real video"]
    # 64x64 clips scored at slamp-real's 96x128 are stretched: one warning says so and how to avoid it
    assert any("clips of 64x64 are scored at 96x128 (the weights' training size), which changes their aspect ratio"
               in w and "--size HxW" in w for w in r["warnings"])
    grey = np.repeat(clip(1, t=8, h=64, w=64)[..., :1], 3, axis=3)
    write_video(tmp_path / "grey" / "a.mp4", grey, fps=10)
    events.clear()
    r = evaluate(method="slamp", data=tmp_path / "grey", split="all", samples=1, context=5, horizon=1,
                 metric="psnr", out=tmp_path / "g", callback=lambda e, rec: events.append((e, rec)))
    assert r["inputs"]["weights"]["name"] == "slamp-movingdigits" and r["inputs"]["channels"] == 1
    # the same line predict prints, with what the entry's works_on says
    assert [rec["message"] for e, rec in events if e == "warning"] == [
        "no --weights given: using slamp-movingdigits (made for digits; not for real video), the first slamp "
        "weights in the manifests for greyscale clips"]
    assert not any("aspect ratio" in w for w in r["warnings"])  # 64x64 at 64x64


def test_eval_paired_script_against_a_direct_computation(tmp_path, capsys):
    import importlib.util
    from scipy import stats
    spec = importlib.util.spec_from_file_location(
        "eval_paired", Path(__file__).resolve().parent.parent / "scripts" / "eval_paired.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    a, b = [0.5, 0.4, 0.7, 0.2], [0.6, 0.3, 0.9, 0.25]
    for name, vals in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        rows = ["sequence,metric,value,best_sample,samples,frames,mean_over_samples"]
        rows += [f"s{i},miou,{v},0,2,5,{v - 0.1}" for i, v in enumerate(vals)]
        rows += [f"s{i},lpips,{v},0,2,5,{v}" for i, v in enumerate(vals)]
        (tmp_path / name / "results.csv").write_text("\n".join(rows) + "\n")
    d = np.array(b) - np.array(a)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    r = mod.paired(a, b, lower_better=False)
    assert r["n"] == 4 and r["mean_diff"] == pytest.approx(d.mean()) and r["ci95"] == pytest.approx(half)
    assert r["b_better"] == 3 and mod.paired(a, b, lower_better=True)["b_better"] == 1
    assert mod.main([str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "miou,lpips"]) == 0
    out = capsys.readouterr().out
    assert f"miou (best sample): b - a = {d.mean():+.4f}" in out and "b better on 3" in out
    assert "lpips (best sample)" in out and "b better on 1" in out
