"""`vpcli segment` end to end with a tiny randomly initialised DeepLabV3+ saved to a tmp path."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from vpcli.cli.app import main
from vpcli.io.labels import CITYSCAPES_PALETTE, read_label_folder, read_labels_npz
from vpcli.io.video import probe, read_video, write_video
from vpcli.preprocess.deeplab import DeepLabV3Plus

TINY = dict(width_mult=0.25, aspp_channels=16, decoder_channels=16, low_level_channels=8, separable=True,
            input_size=[32, 48])
BUNDLED = Path(__file__).resolve().parents[1] / "vpcli" / "assets" / "weights" / "deeplabv3plus-mobilenet-synthstreet.safetensors"


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def save_tiny(folder: Path, name: str = "tiny", **overrides) -> Path:
    torch.manual_seed(0)
    cfg = {**TINY, **overrides}
    model = DeepLabV3Plus(cfg)
    path = folder / f"{name}.safetensors"
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}, str(path))
    (folder / f"{name}.config.json").write_text(json.dumps({"arch": "deeplabv3plus", **cfg}))
    return path


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture
def setup(tmp_path):
    weights = save_tiny(tmp_path)
    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (7, 40, 70, 3), dtype=np.uint8)
    write_video(clips / "street.mkv", frames, fps=10, lossless=True)
    write_video(clips / "seq", frames[:3])  # a PNG frame folder
    return tmp_path, weights, clips


def test_segment_writes_labels_npz_overlay_and_meta(capsys, setup):
    tmp, weights, clips = setup
    out = tmp / "out"
    code, stdout, err = run(capsys, "segment", clips, "--out", out, "--weights", weights, "--batch-size", "3", "--json")
    assert code == 0, err
    records = {json.loads(line)["input"].split("/")[-1]: json.loads(line) for line in stdout.splitlines()}
    assert set(records) == {"street.mkv", "seq"} and all(r["ok"] for r in records.values())
    rec = records["street.mkv"]
    # 40x70 frames are larger than the weights' 32x48: shrunk to fit (aspect kept), labels back to 40x70.
    assert rec["frames"] == 7 and rec["size"] == [40, 70] and rec["inference_size"] == [27, 48]
    folder = out / "street"
    pngs = read_label_folder(folder / "labels")
    stack, classes = read_labels_npz(folder / "labels.npz")
    assert pngs.shape == (7, 40, 70) and np.array_equal(pngs, stack)
    assert classes[0] == "road" and len(classes) == 19 and stack.max() < 19
    assert probe(folder / "overlay.mp4").num_frames == 7
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["weights"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert meta["frames"] == 7 and meta["batch_size"] == 3 and "inference_s" in meta["timings"]
    assert meta["palette"][0] == list(CITYSCAPES_PALETTE[0])
    assert (out / "seq" / "labels" / "00002.png").exists()
    assert not [p for p in out.rglob(".*")]  # no temporaries left behind

    # The labels are the model's argmax at the inference size, resized back by nearest neighbour.
    import cv2

    from vpcli.engine.segment_runner import load_segmenter
    seg = load_segmenter(weights)
    frames, _ = read_video(clips / "street.mkv")
    ids = seg.label_batch(list(frames), (27, 48))
    want = np.stack([cv2.resize(i, (70, 40), interpolation=cv2.INTER_NEAREST) for i in ids])
    assert (want == pngs).mean() > 0.99  # batch composition may flip exact ties


def test_size_option_and_existing_output(capsys, setup):
    tmp, weights, clips = setup
    out = tmp / "out"
    code, stdout, err = run(capsys, "segment", clips / "seq", "--out", out, "--weights", weights, "--size", "16x24",
                            "--json")
    assert code == 0, err
    assert json.loads(stdout)["inference_size"] == [16, 24]
    assert read_label_folder(out / "seq" / "labels").shape == (3, 40, 70)
    before = (out / "seq" / "meta.json").read_bytes()
    code, _, err = run(capsys, "segment", clips / "seq", "--out", out, "--weights", weights)
    assert code == 1 and "already exists" in err and "--overwrite" in err
    assert (out / "seq" / "meta.json").read_bytes() == before
    assert run(capsys, "segment", clips / "seq", "--out", out, "--weights", weights, "--overwrite")[0] == 0


def test_class_count_must_match_the_palette(capsys, setup):
    tmp, _, clips = setup
    five = save_tiny(tmp, "five", num_classes=5)
    code, out, err = run(capsys, "segment", clips / "seq", "--out", tmp / "o", "--weights", five,
                         "--palette", "cityscapes")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "predict 5 classes" in lines[0] and "cityscapes palette has 19" in lines[0]
    assert not (tmp / "o").exists()
    pal = tmp / "pal.yaml"
    pal.write_text(yaml.safe_dump({"a": [0, 0, 0], "b": [255, 0, 0], "c": [0, 255, 0]}))
    code, _, err = run(capsys, "segment", clips / "seq", "--out", tmp / "o", "--weights", five, "--palette", pal)
    assert code == 2 and "has 3" in err
    # Their own class count: an automatic (VOC) palette and class_0.. names.
    code, _, err = run(capsys, "segment", clips / "seq", "--out", tmp / "o", "--weights", five)
    assert code == 0, err
    _, classes = read_labels_npz(tmp / "o" / "seq" / "labels.npz")
    assert classes == tuple(f"class_{i}" for i in range(5))


def test_missing_weights_say_how_to_get_them(capsys, setup, monkeypatch):
    tmp, _, clips = setup
    code, _, err = run(capsys, "segment", clips / "seq", "--out", tmp / "o", "--weights", tmp / "nope.safetensors")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "weights file not found" in err and "hint:" in err
    code, _, err = run(capsys, "segment", clips / "seq", "--out", tmp / "o", "--weights", "no-such-weights")
    assert code == 1 and "unknown weights 'no-such-weights'" in err
    import vpcli.engine.segment_runner as runner
    monkeypatch.setattr(runner, "DEFAULT_WEIGHTS", "deeplab-not-installed")
    code, _, err = run(capsys, "segment", clips / "seq", "--out", tmp / "o")
    assert code == 1 and "not installed" in err and "--weights" in err
    # weights without any config beside them or inside
    bare = tmp / "bare"
    bare.mkdir()
    save_file({"x": torch.zeros(1)}, str(bare / "w.safetensors"))
    code, _, err = run(capsys, "segment", clips / "seq", "--out", tmp / "o", "--weights", bare / "w.safetensors")
    assert code == 1 and "no config found" in err and "config.json" in err
    assert not (tmp / "o").exists()


def test_manifest_name_resolves_with_sha256(capsys, setup, monkeypatch):
    tmp, weights, clips = setup
    manifest = tmp / "extra.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "weights": [{
        "name": "tiny-seg-test", "task": "segmenter", "arch": "deeplabv3plus", "config": TINY,
        "source": {"bundled": weights.name}, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "license": "MIT", "trained_on": "nothing (random init)", "metrics": {}}]}))
    monkeypatch.setenv("VPCLI_MANIFEST", str(manifest))
    code, _, err = run(capsys, "segment", clips / "seq", "--out", tmp / "o", "--weights", "tiny-seg-test", "--json")
    assert code == 0, err
    meta = json.loads((tmp / "o" / "seq" / "meta.json").read_text())
    assert meta["weights"]["name"] == "tiny-seg-test" and meta["weights"]["sha256"] == hashlib.sha256(
        weights.read_bytes()).hexdigest()


def test_vainf_checkpoint_is_converted_on_the_fly(capsys, setup):
    """A VainF .pth (pickled {'model_state', 'best_score': numpy float, ...}) works as --weights."""
    from vpcli.weights.convert_deeplab import vainf_state_shapes
    tmp, _, clips = setup
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.tensor(3) if k.endswith("num_batches_tracked") else
                 torch.rand(s, generator=g) + 0.5 if k.endswith("running_var") else
                 torch.randn(s, generator=g) * 0.05)
             for k, s in vainf_state_shapes("deeplabv3plus_mobilenet").items()}
    ckpt = tmp / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
    torch.save({"cur_itrs": 1, "model_state": state, "best_score": np.float64(0.72)}, ckpt)
    code, stdout, err = run(capsys, "segment", clips / "seq", "--out", tmp / "o", "--weights", ckpt, "--json")
    assert code == 0, err
    assert json.loads(stdout)["inference_size"] == [40, 70]  # no training size known: frames run as they are
    meta = json.loads((tmp / "o" / "seq" / "meta.json").read_text())
    assert meta["config"]["backbone"] == "mobilenetv2" and meta["classes"][0] == "road"
    assert meta["weights"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_corrupt_video_fails_alone_with_one_line(capsys, setup):
    tmp, weights, clips = setup
    (clips / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    good = (clips / "street.mkv").read_bytes()
    (clips / "truncated.mkv").write_bytes(good[: len(good) // 3])
    out = tmp / "out"
    code, stdout, err = run(capsys, "segment", clips, "--out", out, "--weights", weights, "--json")
    assert code == 1 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) >= 1 and any("broken.mp4" in e for e in errors)
    records = {json.loads(line)["input"].split("/")[-1]: json.loads(line) for line in stdout.splitlines()}
    assert records["broken.mp4"]["ok"] is False and records["street.mkv"]["ok"] is True
    assert "truncated.mkv" in records  # Matroska cut mid-stream: the frames that decode, or a clean error
    assert not (out / "broken").exists() and (out / "street" / "meta.json").exists()
    assert not [p for p in out.rglob(".*")]  # a failed input leaves no temporary folder


@pytest.mark.skipif(not BUNDLED.exists(), reason="bundled synthetic-street weights not built yet")
def test_bundled_weights_segment_a_held_out_synthetic_street():
    """The shipped model: fp16, < 8 MB, and it labels an unseen synthetic street frame well."""
    from vpcli.data.synth_street import SynthStreetConfig, render_sequence
    from vpcli.engine.segment_runner import load_segmenter
    from vpcli.metrics.segmentation import miou
    assert BUNDLED.stat().st_size < 8e6
    seg = load_segmenter(BUNDLED)
    assert seg.config.num_classes == 19 and tuple(seg.config.input_size) == (128, 256)
    seq = render_sequence(SynthStreetConfig(length=2), 987654321)  # a seed outside every training split
    pred = seg.label_batch(list(seq.rgb), (128, 256)).astype(np.int64)
    acc = (pred == seq.labels).mean()
    score = float(miou(torch.from_numpy(pred)[None], torch.from_numpy(seq.labels)[None]).mean())
    assert acc > 0.85 and score > 0.35, (acc, score)  # measured: 0.932, 0.439
