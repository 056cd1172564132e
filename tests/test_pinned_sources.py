"""The manifest entries for the published third-party checkpoints (VainF DeepLabV3+, sniklaus PWC-Net).

Their publishers give no sha256, so the entries say `sha256: unpublished` (trust on first use, see
vpcli/weights/resolve.py). The files cannot be downloaded here: the end-to-end tests serve files
with the publishers' exact keys and shapes, saved the way each project saves them, from the
stand-in server on 127.0.0.1 under a copy of the bundled entry, and run the real commands on them.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import yaml

from hub_server import hub, weights_env, write_manifest  # noqa: F401  (fixtures)
from test_deeplab import random_vainf_state
from test_predict import run  # run(capsys, *args): vpcli in-process -> (exit code, stdout, stderr)
from test_pwcnet import sniklaus_state
from vpcli.io.labels import read_labels_npz
from vpcli.io.video import write_video
from vpcli.weights import BUNDLED_MANIFEST, UrlSource, load_manifest

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PINNED = ("deeplabv3plus-mobilenet-cityscapes-vainf", "deeplabv3plus-resnet101-cityscapes-vainf", "pwcnet-sniklaus")
VAINF = {"deeplabv3plus-mobilenet-cityscapes-vainf": "deeplabv3plus_mobilenet",
         "deeplabv3plus-resnet101-cityscapes-vainf": "deeplabv3plus_resnet101"}


def bundled_entries() -> dict[str, dict]:
    """The bundled manifest's entries as YAML data (what a copy with another URL starts from)."""
    data = yaml.safe_load(BUNDLED_MANIFEST.read_text())
    return {e["name"]: e for e in data["weights"]}


def test_bundled_entries_pin_the_published_files_and_describe_their_models():
    from vpcli.preprocess.deeplab import DeepLabConfig
    from vpcli.preprocess.pwcnet import WEIGHTS_NAME, PWCNetConfig
    from vpcli.weights.convert_deeplab import vainf_config

    entries = {e.name: e for e in load_manifest(BUNDLED_MANIFEST)}
    assert WEIGHTS_NAME in PINNED  # the name PWC-Net's error messages point at exists
    for name in PINNED:
        e = entries[name]
        assert isinstance(e.source, UrlSource) and e.source.url.startswith("https://")
        assert not e.published and e.to_record()["sha256"] == "unpublished"
    for name, arch in VAINF.items():
        e = entries[name]
        assert e.task == "segmenter" and e.source.filename.startswith(f"best_{arch}_cityscapes_os16.pth")
        # the entry's config is exactly the model VainF's file holds (classes: Cityscapes' 19 by default)
        ours = DeepLabConfig.from_dict(e.load_config()).to_dict()
        theirs = vainf_config(arch, input_size=(1024, 2048)).to_dict()
        assert {**ours, "classes": None} == {**theirs, "classes": None}
        assert e.metrics["cityscapes-val"]["measured_by_vpcli"] is False
    pwc = entries["pwcnet-sniklaus"]
    assert pwc.task == "flow" and PWCNetConfig.from_dict(pwc.load_config()) == PWCNetConfig()
    assert pwc.source.filename == "network-default.pytorch" and "NC" in pwc.license


@pytest.fixture
def mirror(hub, weights_env, monkeypatch, tmp_path):
    """The three bundled entries, each pointing at a stand-in file on 127.0.0.1 (ResNet-101: a
    VainF MobileNet file under the ResNet name, to check that a wrong file fails clearly)."""
    vainf = tmp_path / "vainf.pth"
    torch.save({"cur_itrs": 30000, "model_state": random_vainf_state("deeplabv3plus_mobilenet", seed=5),
                "optimizer_state": {"state": {}, "param_groups": []}, "best_score": np.float64(0.721)}, vainf)
    pwc = tmp_path / "network-default.pytorch"
    torch.save(sniklaus_state(seed=4), pwc)  # a plain state dict, as published
    served = {"deeplabv3plus-mobilenet-cityscapes-vainf": vainf, "deeplabv3plus-resnet101-cityscapes-vainf": vainf,
              "pwcnet-sniklaus": pwc}
    entries = []
    for name, e in bundled_entries().items():
        if name in PINNED:
            revision = hub.add("mirror", name, served[name].read_bytes())
            e["source"]["url"] = hub.url(f"/mirror/resolve/{revision}/{name}")
            entries.append(e)
    manifest = write_manifest(tmp_path / "mirror.yaml", entries)
    monkeypatch.setenv("VPCLI_MANIFEST", str(manifest))
    return hub, served


def test_segment_and_flow_with_the_published_checkpoints(mirror, tmp_path, capsys):
    hub, served = mirror
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    write_video(tmp_path / "clip", frames)  # a PNG frame folder

    # Before `vpcli weights download` nothing fetches them; the error says what to run.
    seg = ("segment", tmp_path / "clip", "--out", tmp_path / "seg", "--size", "64x128",
           "--weights", "deeplabv3plus-mobilenet-cityscapes-vainf")
    code, out, err = run(capsys, *seg)
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "no published sha256" in err and "vpcli weights download deeplabv3plus-mobilenet-cityscapes-vainf" in err
    assert hub.count() == 0 and not (tmp_path / "seg").exists()
    flow = ("flow", tmp_path / "clip", "--out", tmp_path / "flow", "--method", "pwcnet", "--weights", "pwcnet-sniklaus")
    code, _, err = run(capsys, *flow)
    assert code == 1 and "PWC-Net needs pretrained weights" in err and "vpcli weights download pwcnet-sniklaus" in err
    assert "--method dis" in err and len(err.strip().splitlines()) == 1

    code, out, err = run(capsys, "weights", "download", "deeplabv3plus-mobilenet-cityscapes-vainf",
                         "pwcnet-sniklaus", "--json")
    assert code == 0, err
    records = {r["name"]: r for r in map(json.loads, out.splitlines())}
    for name in ("deeplabv3plus-mobilenet-cityscapes-vainf", "pwcnet-sniklaus"):
        sha = records[name]["sha256"]
        assert records[name]["first_use"] and sha == hashlib.sha256(served[name].read_bytes()).hexdigest()
        assert f"warning: {name}: its publisher gives no sha256; recorded sha256 {sha}" in err
    code, out, _ = run(capsys, "weights", "info", "pwcnet-sniklaus")
    assert code == 0 and "unpublished; recorded at the first download (" in out
    assert records["pwcnet-sniklaus"]["sha256"] in out and "status       cached" in out
    code, out, err = run(capsys, "weights", "verify", "pwcnet-sniklaus", "deeplabv3plus-mobilenet-cityscapes-vainf")
    assert code == 0 and out.count("ok ") == 2, err

    # Now the names work like any other weights, and the outputs record the pinned hash.
    code, _, err = run(capsys, *seg)
    assert code == 0, err
    meta = json.loads((tmp_path / "seg" / "clip" / "meta.json").read_text())
    assert meta["weights"]["name"] == "deeplabv3plus-mobilenet-cityscapes-vainf"
    assert meta["weights"]["sha256"] == records["deeplabv3plus-mobilenet-cityscapes-vainf"]["sha256"]
    # the same labels as the served file passed by path (converted on the fly, config inferred)
    code, _, err = run(capsys, "segment", tmp_path / "clip", "--out", tmp_path / "seg2", "--size", "64x128",
                       "--weights", served["deeplabv3plus-mobilenet-cityscapes-vainf"])
    assert code == 0, err
    (named, classes), (by_path, _) = (read_labels_npz(tmp_path / d / "clip" / "labels.npz") for d in ("seg", "seg2"))
    np.testing.assert_array_equal(named, by_path)
    assert named.shape == (3, 48, 64) and classes[0] == "road" and len(np.unique(named)) > 1

    code, _, err = run(capsys, *flow)
    assert code == 0, err
    meta = json.loads((tmp_path / "flow" / "clip" / "meta.json").read_text())
    assert meta["parameters"]["weights"] == "pwcnet-sniklaus"
    assert meta["parameters"]["weights_sha256"] == records["pwcnet-sniklaus"]["sha256"]

    # A file that is not what the entry describes fails with one line, after its hash is recorded.
    code, _, err = run(capsys, "weights", "download", "deeplabv3plus-resnet101-cityscapes-vainf")
    assert code == 0, err
    code, _, err = run(capsys, "segment", tmp_path / "clip", "--out", tmp_path / "seg3", "--size", "64x128",
                       "--weights", "deeplabv3plus-resnet101-cityscapes-vainf")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "seg3").exists()
