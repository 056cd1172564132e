"""The metrics' published networks: manifest entries, the TorchScript I3D converter (read without
running the archive), torchvision backbones and LPIPS heads loaded through `requires`, and the
one-line "how to get them" messages of `vpcli eval`.

Nothing here touches the network: HF_HUB_OFFLINE is set and the cache is a temporary folder.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vpcli.errors import WeightsError
from vpcli.metrics.backbones import VGG16, AlexNet, convert_torchvision_state_dict
from vpcli.metrics.i3d import InceptionI3d
from vpcli.weights.convert_torchscript import (
    _tf_name,
    convert_i3d_torchscript,
    is_torchscript_archive,
    read_torchscript_tensors,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VPCLI_MANIFEST", raising=False)
    monkeypatch.chdir(tmp_path)


# --- manifest entries ------------------------------------------------------------------------

def test_bundled_manifest_describes_the_metric_networks_the_code_asks_for():
    from vpcli.metrics.csim import DEFAULT_WEIGHTS as CSIM_WEIGHTS
    from vpcli.metrics.fvd import DEFAULT_WEIGHTS as FVD_WEIGHTS
    from vpcli.metrics.lpips import NETS
    from vpcli.weights.manifest import load_manifests

    reg = load_manifests()
    blob = "93daef59c7ae0e9e8f76225521407e60cbafa6aa"  # JunyaoHu/common_metrics_on_video_quality@5f75173
    for name in (FVD_WEIGHTS, "i3d-kinetics400-hf"):
        e = reg.get(name)
        assert e.task == "metric" and e.arch == "i3d" and e.sha256 is None and e.git_blob_sha1 == blob
        assert e.verification == "git blob SHA-1"
    assert "5f751734ce9cef4cd2dddb235726b75dff62a387/fvd/styleganv/i3d_torchscript.pt" in reg.get(FVD_WEIGHTS).source.url
    hub = reg.get("i3d-kinetics400-hf").source
    assert (hub.repo_id, hub.filename) == ("flateon/FVD-I3D-torchscript", "i3d_torchscript.pt")
    for spec in NETS.values():
        heads, backbone = reg.get(spec.weights), reg.get(spec.backbone_weights)
        assert heads.requires == (spec.backbone_weights,) and heads.verification == "published sha256"
        # torchvision's file names carry the first 8 hex digits of the sha256
        prefix = re.search(r"-([0-9a-f]{8})\.pth$", backbone.source.url).group(1)
        assert backbone.sha256_prefix == prefix and backbone.sha256 is None
        assert backbone.verification == "sha256 prefix"
    assert reg.get(CSIM_WEIGHTS).arch == "vgg16"


def test_lpips_head_entries_hold_the_wheel_heads_sha256():
    from test_metrics_lpips import _wheel
    from vpcli.weights.manifest import load_manifests

    wheel = _wheel()
    if wheel is None:
        from conftest import missing_reference
        missing_reference("lpips wheel not found: run scripts/install-test-deps.sh or set VPCLI_LPIPS_WHEEL")
    reg = load_manifests()
    with zipfile.ZipFile(wheel) as zf:
        for net in ("alex", "vgg"):
            digest = hashlib.sha256(zf.read(f"lpips/weights/v0.1/{net}.pth")).hexdigest()
            assert reg.get(f"lpips-{net}").sha256 == digest


# --- the TorchScript I3D -------------------------------------------------------------------

@pytest.fixture(scope="module")
def scripted_i3d(tmp_path_factory):
    """Our I3D with seeded random weights (non-trivial batch norms), traced and saved as TorchScript."""
    torch.manual_seed(0)
    model = InceptionI3d().random_init_(3).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
        model.logits.conv3d.bias.uniform_(-1, 1)
    x = torch.rand(1, 3, 9, 224, 224, generator=torch.Generator().manual_seed(1)) * 2 - 1
    path = tmp_path_factory.mktemp("ts") / "i3d_torchscript.pt"
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
    traced.save(str(path))
    return model, path, x


def test_torchscript_i3d_converts_back_to_the_same_logits(scripted_i3d, monkeypatch):
    model, path, x = scripted_i3d
    assert is_torchscript_archive(path)
    with torch.no_grad(), torch.jit.optimized_execution(False):  # one plain run, no profiling passes
        reference = torch.jit.load(str(path))(x)  # our own test-made archive: running it is fine here

    def refuse(*args, **kwargs):
        raise AssertionError("the converter must not run the archive")

    monkeypatch.setattr(torch.jit, "load", refuse)
    from vpcli.metrics.fvd import FVD

    metric = FVD(path)  # an explicit path: resolved as is, converted on load
    tensors = read_torchscript_tensors(path)
    assert "Mixed_4b.b1b.bn.running_var" in tensors and len(tensors) == len(model.state_dict())
    with torch.no_grad():
        ours = metric.model(x)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
    for key, value in model.state_dict().items():  # so the same logits as the original model, too
        assert torch.equal(metric.model.state_dict()[key], value), key


def test_tf_hub_variable_names_map_onto_our_i3d():
    state = InceptionI3d().random_init_(5).state_dict()
    tf = {}
    for key, value in state.items():
        name = _tf_name(key)
        if name is None or key.endswith("bn.weight"):  # Sonnet's BatchNorm has no scale
            continue
        if value.ndim == 5:
            value = value.permute(2, 3, 4, 1, 0)  # torch Cout,Cin,kT,kH,kW -> TF kT,kH,kW,Cin,Cout
        tf["RGB/inception_i3d/" + name] = value
    assert "RGB/inception_i3d/Mixed_3b/Branch_1/Conv3d_0b_3x3/batch_norm/moving_variance" in tf
    assert "RGB/inception_i3d/Logits/Conv3d_0c_1x1/conv_3d/b" in tf
    out = convert_i3d_torchscript(tf)
    for key, value in state.items():
        if key.endswith("bn.weight"):
            assert torch.equal(out[key], torch.ones_like(value))
        elif not key.endswith("num_batches_tracked"):
            assert torch.equal(out[key], value), key
    dotted = {k.replace("/", "."): v for k, v in tf.items()}
    assert torch.equal(convert_i3d_torchscript(dotted)["Conv3d_1a_7x7.conv3d.weight"],
                       state["Conv3d_1a_7x7.conv3d.weight"])


def test_unknown_or_incomplete_i3d_layouts_are_refused_with_their_keys():
    with pytest.raises(WeightsError, match=r"unknown parameter layout \(2 tensors; first: conv1.weight"):
        convert_i3d_torchscript({"conv1.weight": torch.zeros(1), "fc.bias": torch.zeros(1)})
    state = InceptionI3d().state_dict()
    del state["Mixed_5c.b3b.conv3d.weight"]
    with pytest.raises(WeightsError, match="1 tensors missing"):
        convert_i3d_torchscript({"model." + k: v for k, v in state.items()})
    state = InceptionI3d().state_dict()
    state["logits.conv3d.bias"] = torch.zeros(600)
    with pytest.raises(WeightsError, match="shape"):
        convert_i3d_torchscript(state)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _archive(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", payload)
        zf.writestr("evil/code/__torch__.py", "def forward(self): pass\n")
        zf.writestr("evil/version", "3\n")
    return path


def test_an_archive_whose_pickle_calls_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    direct = _archive(tmp_path / "a.pt", pickle.dumps(_Payload(marker), protocol=2))
    # hidden inside what looks like a module's attributes
    nested = _archive(tmp_path / "b.pt", pickle.dumps({"Conv3d_1a_7x7": {"conv3d": _Payload(marker)}}, protocol=2))
    evaled = _archive(tmp_path / "c.pt", b"\x80\x02cbuiltins\neval\nX\x0e\x00\x00\x00print('boom')\x85R.")
    for path in (direct, nested, evaled):
        assert is_torchscript_archive(path)
        with pytest.raises(WeightsError, match="refused to load (posix|os|nt|builtins)"):
            read_torchscript_tensors(path)
        assert not marker.exists()


def test_damaged_archives_are_refused(tmp_path, scripted_i3d):
    _, path, _ = scripted_i3d
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "short.pt", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data/0"):
                data = data[:-4]  # one float short
            dst.writestr(info, data)
    with pytest.raises(WeightsError, match="holds .* bytes, expected"):
        read_torchscript_tensors(tmp_path / "short.pt")
    (tmp_path / "plain.pt").write_bytes(b"not a zip")
    assert not is_torchscript_archive(tmp_path / "plain.pt")
    with pytest.raises(WeightsError, match="TorchScript"):
        read_torchscript_tensors(tmp_path / "plain.pt")


# --- torchvision backbones and LPIPS parts -------------------------------------------------

def _torchvision_state(cls, seed: int) -> dict[str, torch.Tensor]:
    """A state dict in torchvision's key layout (features + classifier), random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in cls(include_classifier=True).state_dict().items()}
    state = {}
    for k, shape in shapes.items():
        if k.startswith("classifier."):  # in torchvision's file too; dropped unread (small stand-ins here)
            state[k] = torch.zeros(shape[:1])
        else:
            fan_in = shape[1:].numel() if len(shape) > 1 else 1
            state[k] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
    return state


def _hand_written(state: dict[str, torch.Tensor], arch: str, x: torch.Tensor) -> list[torch.Tensor]:
    """The five ReLU outputs LPIPS reads, from F.conv2d / F.max_pool2d on the raw state dict."""
    def conv(h, i, stride=1, pad=1):
        return F.relu(F.conv2d(h, state[f"features.{i}.weight"], state[f"features.{i}.bias"], stride=stride, padding=pad))

    if arch == "alexnet":
        h1 = conv(x, 0, stride=4, pad=2)
        h2 = conv(F.max_pool2d(h1, 3, 2), 3, pad=2)
        h3 = conv(F.max_pool2d(h2, 3, 2), 6)
        h4 = conv(h3, 8)
        return [h1, h2, h3, h4, conv(h4, 10)]
    out, h = [], x
    for k, convs in enumerate([[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]):
        h = F.max_pool2d(h, 2, 2) if k else h
        for i in convs:
            h = conv(h, i)
        out.append(h)
    return out


@pytest.mark.parametrize("arch,cls,taps,size", [("alexnet", AlexNet, AlexNet.RELU_TAPS, 96),
                                                ("vgg16", VGG16, VGG16.BLOCK_RELU_TAPS, 48)])
def test_torchvision_layout_loads_into_our_backbone_with_the_same_features(tmp_path, arch, cls, taps, size):
    from vpcli.metrics._checks import load_tensor_file

    state = _torchvision_state(cls, seed=1)
    torch.save(state, tmp_path / f"{arch}.pth")  # what download.pytorch.org serves: a plain state dict
    net = cls()
    net.load_state_dict(convert_torchvision_state_dict(load_tensor_file(tmp_path / f"{arch}.pth"), arch))
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = net(x, taps)
        ref = _hand_written(state, arch, x)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_lpips_loads_heads_and_the_backbone_it_requires_through_the_manifest(tmp_path, monkeypatch):
    from vpcli.metrics import LPIPS
    from vpcli.metrics.csim import CSIM
    from vpcli.metrics.lpips import convert_lpips_weights

    gen = torch.Generator().manual_seed(4)
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen)
             for k, c in enumerate(AlexNet.RELU_CHANNELS)}  # the lpips file's keys (dropout at model.0)
    backbone = _torchvision_state(AlexNet, seed=5)
    torch.save(heads, tmp_path / "alex.pth")
    torch.save(backbone, tmp_path / "alexnet-owt-00000000.pth")
    vgg = _torchvision_state(VGG16, seed=6)
    torch.save(vgg, tmp_path / "vgg16-00000000.pth")
    manifest = tmp_path / "m.yaml"
    common = "task: metric\n    config: {}\n    license: test\n    trained_on: random\n    metrics: {}\n"
    manifest.write_text(
        "version: 1\nweights:\n"
        f"  - name: test-alexnet\n    arch: alexnet\n    source: {{bundled: alexnet-owt-00000000.pth}}\n"
        f"    sha256: {_sha256(tmp_path / 'alexnet-owt-00000000.pth')}\n    {common}"
        f"  - name: test-lpips-alex\n    arch: lpips\n    source: {{bundled: alex.pth}}\n"
        f"    sha256: {_sha256(tmp_path / 'alex.pth')}\n    requires: [test-alexnet]\n    {common}"
        f"  - name: test-vgg16\n    arch: vgg16\n    source: {{bundled: vgg16-00000000.pth}}\n"
        f"    sha256: {_sha256(tmp_path / 'vgg16-00000000.pth')}\n    {common}")
    monkeypatch.setenv("VPCLI_MANIFEST", str(manifest))
    model = LPIPS("alex", weights="test-lpips-alex", backbone_weights=None)  # the backbone comes from `requires`
    reference = LPIPS("alex", pretrained=False)
    reference.load_state_dict(convert_lpips_weights(backbone, heads, "alex"))
    x0 = torch.rand(1, 2, 3, 64, 64, generator=gen)
    x1 = torch.rand(1, 2, 3, 64, 64, generator=gen)
    torch.testing.assert_close(model(x0, x1), reference(x0, x1))
    with pytest.raises(WeightsError, match="holds only the heads"):
        LPIPS("alex", weights=tmp_path / "alex.pth", backbone_weights=None)
    csim = CSIM("test-vgg16")
    plain = CSIM(pretrained=False)
    plain.net.load_state_dict(convert_torchvision_state_dict(vgg, "vgg16"))
    torch.testing.assert_close(csim(x0, x1), plain(x0, x1))


# --- the one-line messages of vpcli eval ---------------------------------------------------

@pytest.mark.parametrize("metric,name", [("lpips", "lpips-alex"), ("csim", "vgg16-imagenet"),
                                         ("fvd", "i3d-kinetics400")])
def test_missing_metric_networks_name_the_download_command_in_one_line(metric, name):
    from vpcli.engine.evaluate.metrics import build_metrics

    missing: list[dict[str, str]] = []
    assert build_metrics([metric], missing=missing) == []
    (entry,) = missing
    assert entry["weights"] == name and entry["enable"].startswith(f"vpcli weights download {name}")
    assert f"vpcli weights download {name}" in entry["hint"] and len(entry["hint"]) < 120
    line = f"{metric} not computed: {entry['reason']} (to enable: {entry['enable']})"
    assert "\n" not in line and len(line) < 400, line
    with pytest.raises(WeightsError) as err:
        build_metrics([metric])
    text = str(err.value)
    assert "\n" not in text and f"vpcli weights download {name}" in text and len(text) < 500, text


def test_eval_records_the_fvd_protocol():
    from vpcli.engine.evaluate.metrics import build_metrics

    (runner,) = build_metrics(["fvd"], untrained_metrics=True)
    protocol = runner.settings["fvd_protocol"]
    assert protocol["name"] == "reference" and protocol["resize"] == "tf1-bilinear-224"
    assert protocol["embedding"] == "i3d-logits-400" and "first sample" in protocol["sample"]
    assert "context" in protocol and protocol["frames"] == "all frames of each clip"
