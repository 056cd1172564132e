"""`vpcli predict`: output layout, exactness against the predictor, seeds, streaming, components, and
every bad-input message. Tiny seeded models saved as run folders in tmp; the file runs in seconds."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import yaml
from hub_server import weights_env  # noqa: F401  (fixture: isolated caches, empty bundled manifest)
from safetensors.torch import save_file
from test_slamp import lively

from vpcli.cli.app import main
from vpcli.engine.loading import load_predictor
from vpcli.engine.predict_runner import PredictOptions, luma_601, predict, to_uint8
from vpcli.io.video import probe, read_video, write_video
from vpcli.predictors.base import Predictor, StepRecord

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())


def frames(path: Path) -> np.ndarray:
    return read_video(path)[0]


def make_run(root: Path, preset: str, overrides: list[str], gain: bool = False) -> Path:
    """A run folder as `vpcli train` writes it (config.yaml + checkpoints/last.safetensors), untrained."""
    from vpcli.engine.run import resolve_config
    from vpcli.registry import get
    cfg = resolve_config(None, preset, overrides)
    torch.manual_seed(0)
    model = get("predictor", cfg.method).builder(cfg.model_config())
    if gain:
        lively(model)
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (root / "checkpoints").mkdir()
    save_file(model.state_dict(), str(root / "checkpoints" / "last.safetensors"))
    return root


SLAMP_TINY = ["model.nf=4", "model.g_dim_app=8", "model.g_dim_motion=8", "model.rnn_size=8", "model.mask_channels=4",
              "model.z_dim_app=2", "model.z_dim_motion=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        # grey 64x64, 3 context frames (DCGAN-64 backbone)
        "slamp": make_run(root / "slamp", "slamp-mmnist-tiny", SLAMP_TINY, gain=True),
        # grey 32x32, 5 context frames
        "convlstm": make_run(root / "convlstm", "convlstm-mmnist-tiny", []),
        # RGB 32x32
        "convlstm_rgb": make_run(root / "convlstm_rgb", "convlstm-mmnist-tiny", ["data.channels=3"]),
    }


def moving_clip(t: int, h: int, w: int, *, grey: bool, seed: int = 0) -> np.ndarray:
    """A square moving over a smooth random background, uint8 (T, H, W, 3)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, (1, h, w, 3)).astype(np.float32)
    base = (base + np.roll(base, 1, 1) + np.roll(base, 1, 2)) / 3
    clip = np.repeat(base, t, 0)
    for i in range(t):
        clip[i, 4 + i:12 + i, 4 + 2 * i:12 + 2 * i] = 255
    if grey:
        clip[..., 1] = clip[..., 2] = clip[..., 0]
    return clip.astype(np.uint8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    specs = {"grey64": (6, 64, 64, True), "rgb64": (6, 64, 64, False), "grey32": (7, 32, 32, True),
             "rgb32": (7, 32, 32, False), "short": (2, 64, 64, True), "grey48": (6, 48, 80, True)}
    out = {}
    for name, (t, h, w, grey) in specs.items():
        out[name] = write_video(root / f"{name}.mp4", moving_clip(t, h, w, grey=grey), fps=10, lossless=True)
    return out


# ---------------------------------------------------------------------------------------- layout


def test_slamp_layout_frames_and_exactness(capsys, tmp_path, runs, clips):
    code, out, err = run(capsys, "predict", clips["grey64"], "--weights", runs["slamp"], "--horizon", 4,
                         "--samples", 3, "--seed", 5, "--lossless", "--grid", "--out", tmp_path / "p", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["ok"] and record["frames"] == 4 and record["samples"] == 3 and record["context"] == [3, 6]
    folder = tmp_path / "p" / "grey64"
    assert sorted(p.name for p in folder.iterdir()) == [
        "context.mp4", "grid.mp4", "meta.json", "sample_000.mp4", "sample_001.mp4", "sample_002.mp4"]
    got = np.stack([frames(folder / f"sample_{k:03d}.mp4") for k in range(3)])  # S,T,H,W,3
    assert got.shape == (3, 4, 64, 64, 3)
    assert probe(folder / "grid.mp4").num_frames == 3 + 4  # context phase, then the future

    # The written frames are the model's own predict() for the same seed and context.
    model, _, _ = load_predictor(None, str(runs["slamp"]))
    ctx_u8 = frames(clips["grey64"])[3:6, :, :, :1]  # the last 3 frames, grey
    np.testing.assert_array_equal(frames(folder / "context.mp4")[..., :1], ctx_u8)
    rgb = torch.from_numpy(np.ascontiguousarray(ctx_u8.transpose(0, 3, 1, 2))).float().div(255)[None]  # 1,3,1,64,64
    gen = torch.Generator().manual_seed(5)
    want = np.stack([to_uint8(r.frames[0]) for r in model.predict({"rgb": rgb}, 4, 3, gen)], axis=1)  # S,T,H,W,1
    np.testing.assert_array_equal(got[..., :1], want)
    assert (got[..., 0] == got[..., 1]).all()  # grey predictions are written as grey RGB
    assert not np.array_equal(got[0], got[1]) and not np.array_equal(got[1], got[2])  # samples differ

    m = meta(folder)
    assert m["method"] == "slamp" and m["seed"] == 5 and m["samples"] == 3 and m["horizon"] == 4
    assert m["context"]["indices"] == [3, 4, 5] and m["context"]["frames"] == 3
    assert m["weights"]["path"].endswith("last.safetensors") and len(m["weights"]["sha256"]) == 64
    assert m["weights"]["default"] is False and m["conversions"] == [] and m["lossless"] is True
    assert {"decode", "predict", "write", "total"} <= set(m["timings"]) and "torch" in m["versions"]


def test_same_seed_same_output_other_seed_differs(capsys, tmp_path, runs, clips):
    common = ["predict", clips["grey64"], "--weights", runs["slamp"], "--horizon", 3, "--samples", 2, "--lossless"]
    for out, seed in (("a", 1), ("b", 1), ("c", 2)):
        code, _, err = run(capsys, *common, "--seed", seed, "--out", tmp_path / out)
        assert code == 0, err
    a, b, c = (frames(tmp_path / o / "grey64" / "sample_001.mp4") for o in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_start_picks_the_context_and_eval_matches_the_layout(capsys, tmp_path, runs, clips):
    code, _, err = run(capsys, "predict", clips["grey32"], "--weights", runs["convlstm"], "--start", 1,
                       "--horizon", 1, "--samples", 2, "--out", tmp_path / "p", "--lossless")
    assert code == 0, err
    m = meta(tmp_path / "p" / "grey32")
    assert m["context"]["indices"] == [1, 2, 3, 4, 5] and m["context"]["chosen_by"] == "--start"
    np.testing.assert_array_equal(frames(tmp_path / "p" / "grey32" / "context.mp4"), frames(clips["grey32"])[1:6])
    # `vpcli eval --pred` reads NAME/sample_K as samples of NAME (context.mp4 is ignored).
    from vpcli.engine.evaluate import evaluate
    gt = tmp_path / "gt"
    gt.mkdir()
    write_video(gt / "grey32.mp4", frames(clips["grey32"])[6:7], lossless=True)
    r = evaluate(pred=tmp_path / "p", gt=gt, metric="psnr", out=tmp_path / "e", videos=False, plots=False)
    assert r["metrics"]["psnr"]["n"] == 1
    code, _, err = run(capsys, "predict", clips["grey32"], "--weights", runs["convlstm"], "--start", 3,
                       "--out", tmp_path / "q")
    assert code == 1 and "has 7 frames: --start 3 with 5 context frames needs 8" in err


def test_copy_last_needs_no_weights_and_repeats_the_last_context_frame(capsys, tmp_path, clips):
    code, _, err = run(capsys, "predict", clips["rgb32"], "--method", "copy-last", "--context", 2, "--horizon", 3,
                       "--lossless", "--out", tmp_path / "p")
    assert code == 0, err
    src = frames(clips["rgb32"])
    got = frames(tmp_path / "p" / "rgb32" / "sample_000.mp4")
    assert got.shape == (3, 32, 32, 3)
    assert (got == src[-1]).all()
    m = meta(tmp_path / "p" / "rgb32")
    assert m["weights"] == {"name": None, "path": None, "sha256": None, "kind": None, "default": False}


def test_save_components_writes_flow_and_mask_per_sample(capsys, tmp_path, runs, clips):
    code, _, err = run(capsys, "predict", clips["grey64"], "--weights", runs["slamp"], "--horizon", 3,
                       "--samples", 2, "--save-components", "--out", tmp_path / "p")
    assert code == 0, err
    folder = tmp_path / "p" / "grey64"
    for prefix in ("flow", "mask", "pixel", "warped", "average"):
        for k in range(2):
            assert probe(folder / f"{prefix}_sample_{k:03d}.mp4").num_frames == 3
    assert meta(folder)["save_components"] is True
    code, _, err = run(capsys, "predict", clips["grey32"], "--weights", runs["convlstm"], "--save-components",
                       "--out", tmp_path / "q")
    assert code == 2 and "--save-components: convlstm reports no extra maps" in err and not (tmp_path / "q").exists()


def test_components_leave_slamp_predictions_unchanged(runs):
    model, _, _ = load_predictor(None, str(runs["slamp"]))
    ctx = {"rgb": torch.rand(1, 3, 1, 64, 64, generator=torch.Generator().manual_seed(0))}
    plain = [r.frames for r in model.predict(ctx, 3, 2, torch.Generator().manual_seed(3))]
    with_parts = []
    for rec in model.predict(ctx, 3, 2, torch.Generator().manual_seed(3), want_extras=True):
        parts, step = rec.extras, rec.frames
        with_parts.append(step)
        assert parts["flow"].shape == (1, 2, 2, 64, 64) and parts["mask"].shape == (1, 2, 1, 64, 64)
        assert parts["pixel"].shape == parts["warped"].shape == (1, 2, 1, 64, 64)
        mixed = parts["mask"] * parts["pixel"] + (1 - parts["mask"]) * parts["warped"]  # Eq. 1
        torch.testing.assert_close(mixed.clamp(0, 1), step)
        torch.testing.assert_close(parts["average"], (parts["pixel"] + parts["warped"]) / 2)
    for a, b in zip(plain, with_parts):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bf16_precision_stays_close_to_fp32(capsys, tmp_path, runs, clips):
    conv_dtypes: dict[str, set] = {}  # what the convolutions computed in, per run

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            conv_dtypes.setdefault(precision, set()).add(output.dtype)
    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        for precision in ("fp32", "bf16"):
            code, _, err = run(capsys, "predict", clips["grey64"], "--weights", runs["slamp"], "--horizon", 2,
                               "--precision", precision, "--lossless", "--out", tmp_path / precision)
            assert code == 0, err
    finally:
        hook.remove()
    assert conv_dtypes == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}  # autocast was in effect
    a, b = (frames(tmp_path / p / "grey64" / "sample_000.mp4").astype(int) for p in ("fp32", "bf16"))
    assert meta(tmp_path / "bf16" / "grey64")["precision"] == "bf16"
    diff = np.abs(a - b)
    # bf16 really ran: ~40% of the pixels move by a grey level or more (fp32 reruns are bit-identical).
    assert (diff > 0).mean() > 0.05, (diff > 0).mean()
    # Close on average; single pixels can move more (these high-gain weights amplify rounding).
    assert diff.mean() < 2 and (diff > 8).mean() < 0.02


# ---------------------------------------------------------------------------------------- bad input


def test_clip_shorter_than_the_context(capsys, tmp_path, runs, clips):
    code, _, err = run(capsys, "predict", clips["short"], "--weights", runs["slamp"], "--out", tmp_path / "p")
    assert code == 1 and "short.mp4 has 2 frames but slamp needs 3 context frames" in err
    assert "1 of 1 inputs failed" in err and not (tmp_path / "p" / "short").exists()


def test_rgb_clip_for_a_grey_checkpoint_is_converted_to_luma_with_a_warning(capsys, tmp_path, runs, clips):
    code, _, err = run(capsys, "predict", clips["rgb64"], "--weights", runs["slamp"], "--horizon", 1,
                       "--lossless", "--out", tmp_path / "p")
    assert code == 0, err
    assert "warning:" in err and "is RGB but the slamp weights take greyscale" in err and "BT.601" in err
    folder = tmp_path / "p" / "rgb64"
    assert meta(folder)["conversions"] == ["RGB -> grey (ITU-R BT.601 luma)"]
    want = luma_601(frames(clips["rgb64"])[3:6])[..., 0]
    np.testing.assert_array_equal(frames(folder / "context.mp4")[..., 0], want)


def test_grey_clip_for_an_rgb_checkpoint_is_repeated_with_a_warning(capsys, tmp_path, runs, clips):
    code, _, err = run(capsys, "predict", clips["grey32"], "--weights", runs["convlstm_rgb"], "--horizon", 1,
                       "--out", tmp_path / "p")
    assert code == 0, err
    assert "is greyscale but the convlstm weights take RGB: the grey channel is repeated" in err
    assert meta(tmp_path / "p" / "grey32")["conversions"] == ["grey -> RGB (channel repeated)"]


def test_another_resolution_is_letterboxed_and_written_at_the_clips_size(capsys, tmp_path, runs, clips):
    """A 48x80 clip and 64x64 weights: letterboxed (aspect kept) by default, stretched with the
    old --resize; either way the output has the clip's size (vpcli/engine/geometry.py)."""
    code, _, err = run(capsys, "predict", clips["grey48"], "--weights", runs["slamp"], "--horizon", 2,
                       "--out", tmp_path / "p")
    assert code == 0, err
    assert "48x80 (HxW) letterboxed into 64x64" in err and "resized to 38x64" in err
    m = meta(tmp_path / "p" / "grey48")
    assert m["size"] == [48, 80] and m["model_size"] == [64, 64] and m["source_size"] == [48, 80]
    assert m["geometry"]["mode"] == "letterbox" and m["geometry"]["offset"] == [13, 0]
    assert frames(tmp_path / "p" / "grey48" / "sample_000.mp4").shape == (2, 48, 80, 3)
    code, _, err = run(capsys, "predict", clips["grey48"], "--weights", runs["slamp"], "--resize", "--horizon", 2,
                       "--out", tmp_path / "q")
    assert code == 0, err
    m = meta(tmp_path / "q" / "grey48")
    assert m["geometry"]["mode"] == "stretch" and "stretched to 64x64" in m["conversions"][0]
    assert frames(tmp_path / "q" / "grey48" / "sample_000.mp4").shape == (2, 48, 80, 3)


@pytest.mark.usefixtures("weights_env")  # empty bundled manifest
@pytest.mark.parametrize("args, code, text", [
    (["--method", "slamp"], 2, ("no bundled weights for slamp yet — slamp has trained parameters: "
                                "pass --weights RUN_DIR|FILE|NAME")),
    ([], 2, "no bundled weights for slamp yet"),
    (["--method", "nosuch"], 2, "unknown predictor 'nosuch' (hint: valid: "),
    (["--method", "copy-last", "--weights", "SLAMP"], 2, "--method copy-last does not match the weights"),
    (["--weights", "no/such/run"], 1, "weights no/such/run do not exist"),
    (["--method", "copy-last", "--precision", "fp8"], 2, "unknown precision 'fp8'"),
])
def test_usage_errors(capsys, tmp_path, runs, clips, args, code, text):
    args = [str(runs["slamp"]) if a == "SLAMP" else a for a in args]
    got, _, err = run(capsys, "predict", clips["grey64"], *args, "--out", tmp_path / "p")
    assert got == code and text in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "p").exists()


@pytest.mark.usefixtures("weights_env")  # empty bundled manifest
def test_first_manifest_entry_of_the_method_is_the_default(capsys, tmp_path, runs, clips, monkeypatch):
    from vpcli.api import export_weights
    run_copy = tmp_path / "run"
    shutil.copytree(runs["slamp"], run_copy)
    exported = export_weights(run_copy, "tiny-slamp-predict-test")
    monkeypatch.setenv("VPCLI_MANIFEST", exported["manifest"])
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path / "cache"))
    code, _, err = run(capsys, "predict", clips["grey64"], "--method", "slamp", "--horizon", 1,
                       "--out", tmp_path / "p")
    assert code == 0, err
    assert "no --weights given: using tiny-slamp-predict-test" in err
    w = meta(tmp_path / "p" / "grey64")["weights"]
    assert w["name"] == "tiny-slamp-predict-test" and w["default"] is True and w["sha256"] == exported["sha256"]
    # By name, explicitly: not a default.
    code, _, err = run(capsys, "predict", clips["grey64"], "--weights", "tiny-slamp-predict-test", "--horizon", 1,
                       "--out", tmp_path / "q")
    assert code == 0, err
    assert meta(tmp_path / "q" / "grey64")["weights"]["default"] is False


@pytest.mark.usefixtures("weights_env")  # empty bundled manifest
def test_default_weights_follow_the_clip_channels(capsys, tmp_path, runs, clips, monkeypatch):
    """Without --weights, an RGB clip gets the method's first RGB entry and a grey clip its first grey
    entry, whatever their order in the manifest."""
    from vpcli.api import export_weights
    rgb_run = make_run(tmp_path / "rgb", "slamp-mmnist-tiny", SLAMP_TINY + ["data.channels=3"])
    grey_run = tmp_path / "grey"
    shutil.copytree(runs["slamp"], grey_run)
    manifests = [export_weights(run_dir, name)["manifest"] for run_dir, name in ((grey_run, "tiny-grey"),
                                                                                  (rgb_run, "tiny-rgb"))]
    monkeypatch.setenv("VPCLI_MANIFEST", os.pathsep.join(manifests))  # the grey entry comes first
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path / "cache"))
    code, _, err = run(capsys, "predict", clips["rgb64"], clips["grey64"], "--horizon", 1, "--out", tmp_path / "p")
    assert code == 0, err
    assert "using tiny-rgb, the first slamp weights in the manifests for RGB clips" in err
    assert "using tiny-grey, the first slamp weights in the manifests for greyscale clips" in err
    assert meta(tmp_path / "p" / "rgb64")["weights"]["name"] == "tiny-rgb"
    assert meta(tmp_path / "p" / "grey64")["weights"]["name"] == "tiny-grey"
    assert frames(tmp_path / "p" / "rgb64" / "sample_000.mp4").shape[-1] == 3


@pytest.mark.usefixtures("weights_env")  # empty bundled manifest
def test_default_rgb_weights_prefer_a_bundled_entry_made_for_real_video(capsys, tmp_path, clips, monkeypatch):
    """RGB clips get the first bundled entry tagged works_on: [real-video], ahead of earlier entries;
    the line says which and why (and the first entry still wins when none is tagged, see above)."""
    from vpcli.api import export_weights
    manifests = []
    for name, tags in (("tiny-streets", ["synthetic-streets"]), ("tiny-real", ["real-video"])):
        run_dir = make_run(tmp_path / name, "slamp-mmnist-tiny", SLAMP_TINY + ["data.channels=3"])
        path = Path(export_weights(run_dir, name)["manifest"])
        doc = yaml.safe_load(path.read_text())
        doc["weights"][0]["works_on"] = tags
        path.write_text(yaml.safe_dump(doc))
        manifests.append(str(path))
    monkeypatch.setenv("VPCLI_MANIFEST", os.pathsep.join(manifests))  # the streets entry comes first
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path / "cache"))
    code, _, err = run(capsys, "predict", clips["rgb64"], "--horizon", 1, "--out", tmp_path / "p")
    assert code == 0, err
    assert "no --weights given: using tiny-real, the bundled slamp weights for RGB clips made for real video" in err
    w = meta(tmp_path / "p" / "rgb64")["weights"]
    assert w["name"] == "tiny-real" and w["default"] is True
    monkeypatch.setenv("VPCLI_MANIFEST", manifests[0])  # no real-video entry: the first one, said as such
    code, _, err = run(capsys, "predict", clips["rgb64"], "--horizon", 1, "--out", tmp_path / "q")
    assert code == 0, err
    assert ("using tiny-streets (made for synthetic streets; not for real video), the first slamp weights in the "
            "manifests for RGB clips") in err


def test_existing_output_is_refused_and_other_inputs_still_run(capsys, tmp_path, runs, clips):
    args = ["predict", clips["grey64"], clips["short"], "--weights", runs["slamp"], "--horizon", 1]
    code, _, err = run(capsys, *args, "--out", tmp_path / "p")
    assert code == 1 and "1 of 2 inputs failed" in err and (tmp_path / "p" / "grey64" / "meta.json").exists()
    code, _, err = run(capsys, *args, "--out", tmp_path / "p")
    assert code == 1 and "already exists" in err and "--overwrite" in err and "2 of 2 inputs failed" in err
    code, _, err = run(capsys, *args, "--out", tmp_path / "p", "--overwrite")
    assert code == 1 and "1 of 2 inputs failed" in err


# ---------------------------------------------------------------------------------------- streaming


@dataclass
class ProbeConfig:
    context: int = 2
    channels: int = 3


class StreamProbe(Predictor):
    """Yields flat frames and records, at every step, how many steps the runner had finished."""

    name = "test-predict-probe"
    seen: ClassVar[list[int]] = []
    fail_at: ClassVar[int] = -1

    def train_steps(self):
        return []

    @torch.no_grad()
    def predict(self, context, horizon, samples=1, generator=None, *, want_extras=False) -> Iterator[StepRecord]:
        b, _, c, h, w = context["rgb"].shape
        for t in range(horizon):
            if t == type(self).fail_at:
                raise RuntimeError("boom")
            self.seen.append(t)
            yield StepRecord(frames=torch.full((b, samples, c, h, w), (t % 256) / 255))


@pytest.fixture
def probe_method(monkeypatch):
    from vpcli import registry
    registry.ensure_loaded("predictor")
    entry = registry.Entry("predictor", StreamProbe.name, StreamProbe, ProbeConfig, "test only")
    monkeypatch.setitem(registry._REGISTRY["predictor"], entry.name, entry)
    StreamProbe.seen = []
    return entry.name


def test_frames_are_written_as_they_are_yielded(tmp_path, clips, probe_method):
    done: list[int] = []

    def callback(event, record):
        if event == "progress":
            done.append(record["done"])
            assert StreamProbe.seen[-1] == record["done"] - 1  # step t written before step t+1 is computed

    [record] = predict([str(clips["rgb32"])], tmp_path / "p", PredictOptions(
        method=probe_method, horizon=300, samples=2, context=2, lossless=True), callback=callback)
    assert done == list(range(1, 301)) and record["frames"] == 300
    got = frames(tmp_path / "p" / "rgb32" / "sample_001.mp4")
    assert got.shape == (300, 32, 32, 3) and (got[:, 0, 0, 0] == np.arange(300) % 256).all()


def test_a_failure_midway_leaves_nothing(tmp_path, clips, probe_method, monkeypatch):
    monkeypatch.setattr(StreamProbe, "fail_at", 5)
    with pytest.raises(RuntimeError, match="boom"):
        predict([str(clips["rgb32"])], tmp_path / "p", PredictOptions(method=probe_method, horizon=10, grid=True))
    assert list((tmp_path / "p").iterdir()) == []  # no output folder, no temporary left behind


def test_a_deterministic_method_says_so_once_and_writes_one_sample(capsys, tmp_path, clips):
    code, _, err = run(capsys, "predict", clips["rgb32"], clips["grey32"], "--method", "copy-last", "--samples", 3,
                       "--horizon", 2, "--context", 2, "--out", tmp_path / "p")
    assert code == 0, err
    assert err.count("copy-last is deterministic: --samples 3 would give 3 identical samples; writing one") == 1
    for name in ("rgb32", "grey32"):
        folder = tmp_path / "p" / name
        assert sorted(p.name for p in folder.glob("sample_*")) == ["sample_000.mp4"]
        assert meta(folder)["samples"] == 1 and any("deterministic" in n for n in meta(folder)["notes"])
