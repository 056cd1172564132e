"""The HVP checkpoint vpcli ships (trained here, see weights_manifest.yaml): it loads by name, beats
copy-last on frames of held-out synthetic scenes, and `vpcli predict --method hvp` on a plain video
picks it and segments the context with the bundled segmenter."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_predict import run

from vpcli.engine.evaluate import evaluate
from vpcli.io.video import write_video

HVP = "hvp-synthstreet"


pytestmark = pytest.mark.usefixtures("bundled_manifest_only")  # see tests/conftest.py


def test_bundled_hvp_beats_copy_last_frames_on_held_out_scenes(tmp_path):
    common = {"data": "synthetic:synth-street", "context": 5, "horizon": 6, "num_sequences": 4, "samples": 2,
              "size": "64x128", "labels_from": "companion", "videos": False, "plots": False, "batch_size": 4,
              "seed": 0, "metric": "psnr,miou"}
    model = evaluate(weights=HVP, out=tmp_path / "m", **common)["metrics"]
    copy = evaluate(method="copy-last-labels", out=tmp_path / "c", **{**common, "samples": 1})["metrics"]
    assert model["psnr"]["mean"] > copy["psnr"]["mean"] + 0.3, (model["psnr"]["mean"], copy["psnr"]["mean"])
    assert model["miou"]["mean"] > 0.2        # label forecasts are scored: far above chance (~0.05)


def predict_plain_street_clip(tmp_path, capsys, method: str, frames: int, weights: str) -> tuple[dict, set[str]]:
    """`vpcli predict --method METHOD` (no --weights) on a random 64x128 clip of ``frames`` frames,
    3 steps, 2 samples: checks it exited 0 with ``weights`` as the default, labels from the bundled
    segmenter; -> (meta.json, names written)."""
    rng = np.random.default_rng(0)
    clip = write_video(tmp_path / "street.mp4", rng.integers(0, 255, (frames, 64, 128, 3), dtype=np.uint8), fps=10,
                       lossless=True)
    code, _, err = run(capsys, "predict", clip, "--method", method, "--horizon", 3, "--samples", 2,
                       "--out", tmp_path / "p")
    assert code == 0, err
    meta = json.loads((tmp_path / "p" / "street" / "meta.json").read_text())
    assert meta["weights"]["name"] == weights and meta["weights"]["default"] is True
    assert meta["inputs"]["labels"] == "deeplabv3plus-mobilenet-synthstreet"
    return meta, {p.name for p in (tmp_path / "p" / "street").iterdir()}


def test_predict_method_hvp_on_a_plain_video_segments_and_writes_labels(tmp_path, capsys):
    _, names = predict_plain_street_clip(tmp_path, capsys, "hvp", 6, HVP)
    assert {"sample_001.mp4", "sample_000.labels", "frames_labels_sample_000.mp4"} <= names
