"""The SADM checkpoint vpcli ships (trained here, see weights_manifest.yaml): it loads by name,
beats copy-last on frames and on flow of held-out synthetic scenes, and `vpcli predict --method
sadm` on a plain video picks it, segments the context with the bundled segmenter, computes its flow
with DIS and writes frames, labels, flow and the dis-occlusion mask."""
from __future__ import annotations


import pytest
from test_hvp_bundled import predict_plain_street_clip

from vpcli.engine.evaluate import evaluate

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
    meta, names = predict_plain_street_clip(tmp_path, capsys, "sadm", 5, SADM)
    assert meta["inputs"]["flow"] == "dis"
    # the dis-occlusion mask is one of SADM's results: written without --save-components
    assert {"sample_001.mp4", "sample_000.labels", "sample_000.flow", "disocclusion_sample_000.mp4"} <= names
    assert "warped_sample_000.mp4" not in names and set(meta["extras"]) == {"disocclusion"}
