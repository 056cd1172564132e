"""The SLAMP authors' published checkpoints (kaanakan/slamp v1.0 release assets): the restricted
unpickler, conversion on download, the manifest entries, and the authors' BatchNorm protocol.

The checkpoint files are made here with the structure kaanakan/slamp's train.py gives them:
``torch.save(models)`` of whole modules (classes from their ``models.*`` modules, registered
here as stand-ins), plus ``opt`` (an argparse Namespace) and ``epoch``; PyTorch 1.4's legacy
stream format and the zip format of later versions.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hub_server import hub, weights_env, write_manifest  # noqa: F401
from test_slamp import authors_dcgan_layout, clip, tiny_slamp
from vpcli.errors import InputError
from vpcli.weights.unpickle import Stub, load_restricted, module_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

SMALL = {"nc": 1, "g": 16, "z": 4, "rnn": 16, "nf": 8}  # authors_dcgan_layout sizes of the tiny checkpoint
SMALL_MODEL = {"backbone": "dcgan64", "nf": 8, "g_dim_app": 16, "g_dim_motion": 16, "z_dim_app": 4,
               "z_dim_motion": 4, "rnn_size": 16, "mask_channels": 64, "batchnorm": "batch-per-sample"}


# --------------------------------------------------------------------------- authors-like files

@pytest.fixture
def authors_modules(monkeypatch):
    """Stand-ins for kaanakan/slamp's ``models.*`` modules, importable while the test runs; every
    restore of one of their objects is counted (the restricted unpickler must make none)."""
    restored: list[str] = []
    names = {"models.dcgan_64": ("encoder", "decoder", "dcgan_conv", "dcgan_upconv"),
             "models.lstm": ("lstm", "gaussian_lstm"), "models.mask_predictor": ("mask_predictor", "vgg_layer", "SELayer")}
    package = types.ModuleType("models")
    monkeypatch.setitem(sys.modules, "models", package)
    classes = {}
    for mod_name, class_names in names.items():
        mod = types.ModuleType(mod_name)
        for name in class_names:
            def setstate(self, state, _name=name):
                restored.append(_name)
                nn.Module.__setstate__(self, state)
            cls = type(name, (nn.Module,), {"__module__": mod_name, "__setstate__": setstate})
            setattr(mod, name, cls)
            classes[name] = cls
        monkeypatch.setitem(sys.modules, mod_name, mod)
        setattr(package, mod_name.split(".")[1], mod)
    return classes, restored


def _leaf(keys: dict[str, tuple], transposed: bool) -> nn.Module:
    w = keys.get("weight")
    if "running_mean" in keys:
        return nn.BatchNorm2d(w[0])
    if "weight_ih" in keys:
        return nn.LSTMCell(keys["weight_ih"][1], keys["weight_hh"][1])
    if len(w) == 2:
        return nn.Linear(w[1], w[0], bias="bias" in keys)
    if transposed:
        return nn.ConvTranspose2d(w[0], w[1], w[2], bias="bias" in keys)
    return nn.Conv2d(w[1], w[0], w[2], bias="bias" in keys)


def _build(classes, comp: str, layout: dict[str, tuple], gen: torch.Generator) -> nn.Module:
    """A whole module of the authors' classes with ``layout``'s names and shapes, random values."""
    top = {"pixel_encoder": "encoder", "motion_encoder": "encoder", "pixel_decoder": "decoder",
           "flow_decoder": "decoder", "mask_decoder": "mask_predictor"}.get(comp)
    top = top or ("gaussian_lstm" if comp.startswith(("posterior", "prior")) else "lstm")
    tree: dict = {}
    for key, shape in layout.items():
        *path, param = key.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node.setdefault("__params__", {})[param] = shape

    def make(node: dict, name: str, cls_name: str | None, depth: int) -> nn.Module:
        params = node.get("__params__")
        children = {k: v for k, v in node.items() if k != "__params__"}
        if params and not children:
            return _leaf(params, transposed=top == "decoder")
        if cls_name is not None:
            module = classes[cls_name]()
        elif all(k.isdigit() for k in children):
            module = nn.ModuleList() if name == "lstm" else nn.Sequential()
        else:
            wrapper = {"encoder": "dcgan_conv", "decoder": "dcgan_upconv", "mask_predictor": "vgg_layer"}[top]
            module = classes["SELayer" if "fc" in children else wrapper]()
        for child_name, child in children.items():
            module.add_module(child_name, make(child, child_name, None, depth + 1))
        return module

    module = make(tree, comp, top, 0)
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if value.dtype.is_floating_point:
                value.copy_(torch.randn(value.shape, generator=gen))
            else:
                value.fill_(7)
    # What else the authors' modules carry (models/lstm.py, dcgan_64.py): plain attributes.
    if top in ("lstm", "gaussian_lstm"):
        module.batch_size, module.device = 2, torch.device("cpu")
        module.hidden = [(torch.zeros(2, SMALL["rnn"]), torch.zeros(2, SMALL["rnn"]))]
    if top == "decoder":
        module.act = nn.Sigmoid if comp == "pixel_decoder" else None
    return module


def authors_checkpoint(path, classes, *, legacy: bool, seed: int = 0, opt_changes: dict | None = None):
    """Write a kaanakan/slamp-style MNIST checkpoint of the SMALL sizes; -> the components' state dicts."""
    gen = torch.Generator().manual_seed(seed)
    layout = authors_dcgan_layout(**SMALL)
    models = {comp: _build(classes, comp, keys, gen) for comp, keys in layout.items()}
    state = {comp: {k: v.clone() for k, v in m.state_dict().items()} for comp, m in models.items()}
    opt = dict(  # args.py, as parsed for the README's MNIST command
        lr=0.0003, beta1=0.9, batch_size=32, log_dir="logs/lp", dataset="smmnist", n_past=5, n_future=10, n_eval=25,
        channels=SMALL["nc"], rnn_size=SMALL["rnn"], prior_rnn_layers=1, posterior_rnn_layers=1,
        predictor_rnn_layers=2, z_dim_app=SMALL["z"], g_dim_app=SMALL["g"], z_dim_motion=SMALL["z"],
        g_dim_motion=SMALL["g"], beta=0.0001, model="dcgan", num_digits=2, last_frame_skip=True, running_avg=True,
        sch_sampling=0, two_lstm=False, motion_skip=False, device=True, is_real_dataset=False,
        optimizer=torch.optim.Adam, sc_prob=np.float64(0.25))
    opt = argparse.Namespace(**{**opt, **(opt_changes or {})})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy writer cannot find the stand-ins' source
        torch.save({**models, "opt": opt, "epoch": 290}, path, _use_new_zipfile_serialization=not legacy)
    return state


# --------------------------------------------------------------------------- restricted unpickler

@pytest.mark.parametrize("legacy", [True, False], ids=["pytorch-1.4-stream", "zip"])
def test_reads_whole_module_checkpoints_as_stubs_and_tensors(tmp_path, authors_modules, legacy):
    classes, restored = authors_modules
    path = tmp_path / "slamp_mnist.pth"
    state = authors_checkpoint(path, classes, legacy=legacy)
    content = load_restricted(path)
    assert restored == []  # not one of the authors' classes was restored (nor imported, nor called)
    assert set(content) == set(state) | {"opt", "epoch"} and content["epoch"] == 290
    enc = content["pixel_encoder"]
    assert isinstance(enc, Stub) and not isinstance(enc, nn.Module) and "models.dcgan_64.encoder" in repr(enc)
    for comp, sd in state.items():
        ours = module_state_dict(content[comp])
        assert list(ours) == list(sd) and all(torch.equal(ours[k], sd[k]) for k in sd)
    from vpcli.weights.convert_slamp import read_authors_checkpoint
    parts, opt = read_authors_checkpoint(path)
    assert opt["dataset"] == "smmnist" and opt["optimizer"] == "torch.optim.adam.Adam" and opt["sc_prob"] == 0.25
    assert parts.keys() == state.keys()


class _Payload:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def test_a_reduce_payload_is_refused_and_nothing_runs(tmp_path, authors_modules):
    classes, restored = authors_modules
    marker = tmp_path / "ran"
    payloads = {
        "os.system": _Payload(os.system, (f"touch {marker}",)),
        "builtins.exec": _Payload(exec, (f"open({str(marker)!r}, 'w').close()",)),
        # a call of one of the authors' (stubbed) classes: restored objects are never called
        "models.lstm.lstm": _Payload(classes["lstm"], ()),
        # any other importable function is a stub too, and a stub is never called
        "test_slamp_official._build": _Payload(_build, (classes, "prior", {}, None)),
    }
    for what, payload in payloads.items():
        for legacy in (True, False):
            path = tmp_path / f"evil-{legacy}.pth"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the legacy writer cannot find the stand-ins' source
                torch.save({"pixel_encoder": {"c1.main.0.weight": torch.zeros(1)}, "opt": payload}, path,
                           _use_new_zipfile_serialization=not legacy)
            with pytest.raises(InputError, match="refusing") as err:
                load_restricted(path)
            assert what.split(".")[-1] in str(err.value) and "nothing from the file was run" in str(err.value)
    assert not marker.exists() and restored == []
    # Hooks in a tensor record (a callable the file chose; torch.save itself never writes them) are dropped.
    from collections import OrderedDict

    from vpcli.weights import unpickle
    storage = torch.zeros(2).untyped_storage()
    typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
    t = unpickle._rebuild_tensor_v2(typed, 0, (2,), (1,), True, OrderedDict({0: print}))
    assert not t.requires_grad and not t._backward_hooks


def test_a_broken_file_is_an_input_error(tmp_path):
    path = tmp_path / "half.pth"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2)[:-3])
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        load_restricted(path)


# --------------------------------------------------------------------------- manifest entries

OFFICIAL = {"mmnist": "slamp_mnist.pth", "kth": "slamp_kth.pth", "bair": "slamp_bair.pth",
            "kitti": "slamp_kitti.pth", "cityscapes": "slamp_cityscapes.pth"}


def test_the_five_official_entries_and_their_configs():
    import yaml

    from vpcli.weights import load_manifests
    reg = load_manifests(env=False)
    for key, asset in OFFICIAL.items():
        e = reg.get(f"slamp-{key}-official")
        assert e.source.url == f"https://github.com/kaanakan/slamp/releases/download/v1.0/{asset}"
        assert e.sha256 is None and e.convert == "slamp-official" and e.task == "predictor" and e.arch == "slamp"
        cfg = e.load_config()
        preset = yaml.safe_load((e.manifest.parent / "vpcli" / "presets" / f"slamp-{key}.yaml").read_text())
        assert cfg["model"] == {**preset["model"], "batchnorm": "batch-per-sample"}  # the preset, plus their protocol
        assert {k: cfg["data"][k] for k in ("context", "size", "channels")} == \
            {k: preset["data"][k] for k in ("context", "size", "channels")}
    # The paper-size MNIST entry fits the authors' layout (names and shapes; meta tensors, no memory).
    from vpcli.weights.convert_on_download import _model_of
    from vpcli.weights.convert_slamp import convert_slamp_official
    model, _ = _model_of(reg.get("slamp-mmnist-official"))
    src = {c: {k: torch.empty(s, device="meta") for k, s in sd.items()} for c, sd in authors_dcgan_layout().items()}
    assert len(convert_slamp_official(src, model=model)) == len(model.state_dict())


# --------------------------------------------------------------------------- the whole path

def _small_entry(url: str) -> dict:
    return {"name": "slamp-tiny-official", "task": "predictor", "arch": "slamp",
            "config": {"method": "slamp", "model": SMALL_MODEL,
                       "data": {"context": 3, "future": 4, "size": [64, 64], "channels": 1}},
            "source": {"url": url}, "sha256": "unpublished", "convert": "slamp-official",
            "license": "Apache-2.0", "trained_on": "random weights made by the test", "metrics": {}}


def _cli(capsys, *args) -> tuple[int, str, str]:
    from vpcli.cli.app import main
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_download_converts_once_and_predict_and_eval_use_it(tmp_path, weights_env, hub, authors_modules, capsys,
                                                            monkeypatch):
    from vpcli.weights import first_use_dir, load_manifests, resolve_weights
    from vpcli.weights.convert_on_download import RECORD, converted_dir
    from vpcli.weights.hashing import hash_file
    from vpcli.weights.convert_slamp import convert_slamp_official

    classes, restored = authors_modules
    pth = tmp_path / "slamp_tiny.pth"
    state = authors_checkpoint(pth, classes, legacy=True)
    data = pth.read_bytes()
    url = hub.page("/kaanakan/slamp/releases/download/v1.0/slamp_tiny.pth", data, "application/octet-stream")
    manifest = write_manifest(tmp_path / "m.yaml", [_small_entry(url)])
    monkeypatch.setenv("VPCLI_MANIFEST", str(manifest))
    entry = load_manifests().get("slamp-tiny-official")

    code, out, err = _cli(capsys, "weights", "download", "slamp-tiny-official", "--json")
    assert code == 0, err
    rec = json.loads(out.splitlines()[-1])
    sha = hash_file(pth)
    assert rec["first_use"] and rec["sha256"] == sha and "recorded sha256 " + sha in err
    folder = converted_dir(entry, sha)
    conv = folder / "slamp-tiny-official.safetensors"
    assert rec["path"] == str(conv)
    record = json.loads((folder / RECORD).read_text())
    assert record["source_sha256"] == sha and record["sha256"] == hash_file(conv)  # the converted file's hash too
    assert json.loads((first_use_dir(entry) / "sha256.json").read_text())["sha256"] == sha
    from safetensors.torch import load_file
    ours = load_file(conv)
    want = convert_slamp_official(state)
    assert ours.keys() == want.keys() and all(torch.equal(ours[k], want[k]) for k in want)
    assert restored == []

    # Cached: neither fetched nor converted again; a damaged conversion is made anew from the original.
    gets, mtime = hub.count("GET"), conv.stat().st_mtime_ns
    assert resolve_weights("slamp-tiny-official").path == conv and hub.count("GET") == gets
    assert conv.stat().st_mtime_ns == mtime
    conv.write_bytes(b"x" * 100)
    from vpcli.weights import hashing
    hashing.clear_memory()
    assert resolve_weights("slamp-tiny-official").path == conv and hash_file(conv) == record["sha256"]

    # predict just works, in the authors' BatchNorm mode, and meta.json says so
    from vpcli.io.video import write_video
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (4, 64, 64, 1), dtype=np.uint8), 3, axis=3)
    clip_path = write_video(tmp_path / "clip.mp4", frames, fps=10, lossless=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one clip: the encoders' 1x1 layers fall back (tested below)
        code, _, err = _cli(capsys, "predict", clip_path, "--weights", "slamp-tiny-official", "--horizon", "2",
                            "--samples", "2", "--out", tmp_path / "pred")
    assert code == 0, err
    meta = json.loads((tmp_path / "pred" / "clip" / "meta.json").read_text())
    assert meta["weights"]["name"] == "slamp-tiny-official" and meta["weights"]["sha256"] == sha
    assert meta["model"]["batchnorm"] == "batch-per-sample"

    # eval records the mode in results.json
    code, _, err = _cli(capsys, "eval", "--weights", "slamp-tiny-official", "--data", "synthetic:moving-digits",
                        "--num-sequences", "2", "--samples", "2", "--horizon", "2", "--batch-size", "2",
                        "--metric", "psnr", "--out", tmp_path / "e")
    assert code == 0, err
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert results["inputs"]["batchnorm"] == "batch-per-sample"


def test_a_checkpoint_of_other_settings_is_refused(tmp_path, weights_env, hub, authors_modules, capsys, monkeypatch):
    classes, _ = authors_modules
    pth = tmp_path / "slamp_tiny.pth"
    authors_checkpoint(pth, classes, legacy=False, opt_changes={"motion_skip": True})
    url = hub.page("/v1.0/slamp_tiny.pth", pth.read_bytes(), "application/octet-stream")
    monkeypatch.setenv("VPCLI_MANIFEST", str(write_manifest(tmp_path / "m.yaml", [_small_entry(url)])))
    code, _, err = _cli(capsys, "weights", "download", "slamp-tiny-official")
    assert code == 1 and "motion_skip: checkpoint True, config False" in err


# --------------------------------------------------------------------------- BatchNorm protocol

def _sample_noise(b: int, s: int, seed: int = 3):
    """Latent noise per (kind, step), (B, S, z): sample k of a batched run gets what run k alone gets."""
    table: dict = {}

    def draw(kind, t, shape):
        if (kind, t) not in table:
            g = torch.Generator().manual_seed(seed * 1000 + 10 * t + (kind == "motion"))
            table[(kind, t)] = torch.randn((b, s, *shape[2:]), generator=g)
        return table[(kind, t)]
    return draw


@pytest.mark.parametrize("backbone", ["dcgan64", "cityscapes"])
def test_batch_per_sample_batched_equals_separate_runs_and_differs_from_eval(backbone):
    b, s, horizon = (3, 4, 3) if backbone == "dcgan64" else (2, 3, 2)
    channels = 1 if backbone == "dcgan64" else 3
    model = tiny_slamp(backbone, channels, batchnorm="batch-per-sample").eval()
    x = clip(b, 4, channels)
    noise = _sample_noise(b, s)
    batched = torch.stack([r.frames for r in model.predict({"rgb": x}, horizon, s, noise=noise)])  # H,B,S,...
    for k in range(s):
        alone = torch.stack([r.frames[:, 0] for r in model.predict(
            {"rgb": x}, horizon, 1, noise=lambda kind, t, shape, k=k: noise(kind, t, shape)[:, k:k + 1])])
        assert (batched[:, :, k] - alone).abs().max() < 1e-5
    # the same weights in eval mode (running statistics) predict something else
    plain_model = tiny_slamp(backbone, channels).eval()
    plain_model.load_state_dict(model.state_dict())
    assert model.state_dict().keys() == plain_model.state_dict().keys()
    other = torch.stack([r.frames for r in plain_model.predict({"rgb": x}, horizon, s, noise=noise)])
    assert (other - batched).abs().max() > 1e-2


def test_batch_per_sample_is_train_mode_batchnorm_of_one_sample_batch():
    """One group: exactly the statistics of PyTorch's train-mode BatchNorm (the authors' evaluate.py)."""
    model = tiny_slamp(batchnorm="batch-per-sample").eval()
    bn = model.pixel_encoder.c2[1]
    assert type(bn).__name__ == "_GroupBatchNorm2d"
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
        x = torch.randn(5, bn.num_features, 6, 6)
        want = F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
        assert (bn(x) - want).abs().max() < 1e-5
        # two groups (rows sample-minor): each normalised by its own rows
        pair = torch.stack([x, 2 * x + 1], 1).reshape(10, *x.shape[1:])
        model._groups.n = 2
        out = bn(pair).view(5, 2, *x.shape[1:])
        assert (out[:, 0] - want).abs().max() < 1e-5 and (out[:, 1] - want).abs().max() < 1e-4
        cl = bn(pair.contiguous(memory_format=torch.channels_last))   # predict's memory format on the CPU
        assert cl.is_contiguous(memory_format=torch.channels_last)
        assert (cl.view(5, 2, *x.shape[1:]) - out).abs().max() < 1e-6
        model._groups.n = 1
    bn.train()
    assert torch.equal(bn(x), F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps))


def test_one_clip_falls_back_where_train_mode_batchnorm_would_raise():
    model = tiny_slamp(batchnorm="batch-per-sample").eval()
    with pytest.warns(UserWarning, match=r"_encoder\.c5\.1 sees one value per channel") as caught:
        list(model.predict({"rgb": clip(1, 4)}, 2, 2))
        list(model.predict({"rgb": clip(1, 4)}, 2, 2))  # said once per layer
    assert sorted(str(w.message).split(":")[1].split()[0] for w in caught) == ["motion_encoder.c5.1",
                                                                              "pixel_encoder.c5.1"]
    with pytest.raises(ValueError, match="batchnorm must be one of eval, batch-per-sample"):
        tiny_slamp(batchnorm="authors")
