"""The SADM checkpoint vpcli ships (trained here, see weights_manifest.yaml): it loads by name,
beats copy-last on frames and on flow of held-out synthetic scenes, and `vpcli predict --method
sadm` on a plain video picks it, segments the context with the bundled segmenter, computes its flow
with DIS and writes frames, labels, flow and the dis-occlusion mask."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_predict import run

from vpcli.engine.evaluate import evaluate
from vpcli.io.video import write_video

SADM = "sadm-synthstreet"


pytestmark = pytest.mark.usefixtures("bundled_manifest_only")  # see tests/conftest.py


def test_bundled_sadm_beats_copy_last_frames_and_zero_flow_on_held_out_scenes(tmp_path):
    common = {"data": "synthetic:synth-street", "context": 4, "horizon": 5, "num_sequences": 4, "samples": 1,
              "size": "64x128", "labels_from": "companion", "flow_from": "companion", "videos": False,
              "plots": False, "batch_size": 4, "seed": 0, "metric": "psnr,miou,epe"}
    model = evaluate(weights=SADM, out=tmp_path / "m", **common)["metrics"]
    copy = evaluate(method="copy-last-labels", out=tmp_path / "c", **common)["metrics"]
    assert model["psnr"]["mean"] > copy["psnr"]["mean"] + 0.3, (model["psnr"]["mean"], copy["psnr"]["mean"])
    assert model["epe"]["mean"] < 0.8 * copy["epe"]["mean"], (model["epe"]["mean"], copy["epe"]["mean"])
    assert model["miou"]["mean"] > 0.3        # 7 category groups: far above chance


def test_predict_method_sadm_on_a_plain_video_segments_computes_flow_and_writes_masks(tmp_path, capsys):
    rng = np.random.default_rng(0)
    clip = write_video(tmp_path / "street.mp4", rng.integers(0, 255, (5, 64, 128, 3), dtype=np.uint8), fps=10,
                       lossless=True)
    code, _, err = run(capsys, "predict", clip, "--method", "sadm", "--horizon", 3, "--samples", 2,
                       "--out", tmp_path / "p")
    assert code == 0, err
    meta = json.loads((tmp_path / "p" / "street" / "meta.json").read_text())
    assert meta["weights"]["name"] == SADM and meta["weights"]["default"] is True
    assert meta["inputs"]["labels"] == "deeplabv3plus-mobilenet-synthstreet" and meta["inputs"]["flow"] == "dis"
    names = {p.name for p in (tmp_path / "p" / "street").iterdir()}
    # the dis-occlusion mask is one of SADM's results: written without --save-components
    assert {"sample_001.mp4", "sample_000.labels", "sample_000.flow", "disocclusion_sample_000.mp4"} <= names
    assert "warped_sample_000.mp4" not in names and set(meta["extras"]) == {"disocclusion"}
