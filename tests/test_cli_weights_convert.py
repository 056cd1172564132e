"""`vpcli weights convert`: other projects' checkpoints -> vpcli safetensors + a one-entry manifest.

Each source file is built with the source project's exact keys and shapes (the helpers of the
converter tests) and saved the way that project saves it; the CLI runs in-process through
`vpcli.cli.app.main` (test_predict's `run`); the output must load strictly into our model with
the values in place.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from hub_server import weights_env  # noqa: F401  (fixture, used through pytestmark)
from test_deeplab import random_vainf_state
from test_predict import run  # run(capsys, *args): vpcli in-process -> (exit code, stdout, stderr)
from test_pwcnet import sniklaus_state
from test_slamp import authors_dcgan_layout

# every test: isolated caches, empty bundled manifest; torch on one thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("weights_env", "one_thread")

# slamp-mmnist-tiny with the authors' mask decoder width (their mask_predictor.py fixes it at 64).
SLAMP_ARGS = ("--config", "slamp-mmnist-tiny", "--set", "model.mask_channels=64")
SLAMP_LAYOUT = {"nc": 1, "g": 16, "z": 4, "rnn": 32, "nf": 8}  # slamp-mmnist-tiny's widths


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """One file per format, as its project writes it, plus what went into it."""
    root = tmp_path_factory.mktemp("sources")
    g = torch.Generator().manual_seed(0)
    slamp = {comp: {k: torch.randn(shape, generator=g) if shape else torch.tensor(7) for k, shape in sd.items()}
             for comp, sd in authors_dcgan_layout(**SLAMP_LAYOUT).items()}
    slamp["epoch"] = 120  # kaanakan/slamp train.py saves it beside the models
    torch.save(slamp, root / "slamp_mnist.sd.pth")  # their checkpoint, re-saved as per-component state dicts
    vainf = random_vainf_state("deeplabv3plus_mobilenet", seed=3)
    torch.save({"cur_itrs": 30000, "model_state": vainf, "optimizer_state": {"state": {}, "param_groups": []},
                "best_score": np.float64(0.721)}, root / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth")
    pwc = sniklaus_state(seed=2)
    torch.save(pwc, root / "network-default.pytorch")  # a plain state dict, as published
    return {"slamp-official": root / "slamp_mnist.sd.pth",
            "deeplab-vainf": root / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth",
            "pwcnet-sniklaus": root / "network-default.pytorch",
            "values": {"slamp-official": slamp, "deeplab-vainf": vainf, "pwcnet-sniklaus": pwc}}


FORMAT_ARGS = {"slamp-official": SLAMP_ARGS, "deeplab-vainf": ("--arch", "mobilenet"), "pwcnet-sniklaus": ()}


def convert(capsys, sources, fmt: str, out: Path, *extra) -> tuple[int, str, str]:
    return run(capsys, "weights", "convert", "--from", fmt, sources[fmt], "--out", out, *FORMAT_ARGS[fmt], *extra)


def our_model(fmt: str, cfg: dict):
    if fmt == "slamp-official":
        from vpcli.engine.run import resolve_config
        from vpcli.predictors.slamp import SLAMP
        return SLAMP(resolve_config(None, None, base=cfg).model_config())
    if fmt == "deeplab-vainf":
        from vpcli.preprocess.deeplab import DeepLabConfig, DeepLabV3Plus
        return DeepLabV3Plus(DeepLabConfig.from_dict(cfg))
    from vpcli.preprocess.pwcnet import PWCNet, PWCNetConfig
    return PWCNet(PWCNetConfig.from_dict(cfg))


# (our key, the source's key, transform) per format: one tensor that must land unchanged.
LANDED = {
    "slamp-official": ("pixel_encoder.c1.0.weight", ("pixel_encoder", "c1.main.0.weight"), None),
    "deeplab-vainf": ("backbone.blocks.16.project.conv.weight", "backbone.high_level_features.17.conv.2.weight", None),
    "pwcnet-sniklaus": ("extractor.levels.0.0.weight", "moduleExtractor.moduleOne.0.weight", lambda t: t.flip(1)),
}


@pytest.mark.parametrize("fmt", list(FORMAT_ARGS))
def test_convert_each_format_loads_strictly_with_provenance(fmt, sources, tmp_path, capsys):
    out = tmp_path / "w" / f"{fmt}.safetensors"  # a new folder: it is created
    code, stdout, err = convert(capsys, sources, fmt, out, "--json")
    assert code == 0, err
    rec = json.loads(stdout)
    src_sha = sha256(sources[fmt])
    assert rec["format"] == fmt and rec["source_sha256"] == src_sha
    assert rec["sha256"] == sha256(out)
    assert sorted(p.name for p in out.parent.iterdir()) == [f"{fmt}.manifest.yaml", f"{fmt}.safetensors"]

    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["vpcli_format"] == fmt and meta["vpcli_source"] == sources[fmt].name
    assert meta["vpcli_source_sha256"] == src_sha and meta["vpcli_name"] == fmt
    cfg = json.loads(meta["vpcli_config"])
    entry = yaml.safe_load(Path(rec["manifest"]).read_text())["weights"][0]
    assert entry["config"] == cfg and entry["sha256"] == rec["sha256"] and entry["source"] == {"bundled": out.name}
    assert src_sha in entry["trained_on"] and entry["task"] == rec["task"]

    model = our_model(fmt, cfg)
    model.load_state_dict(load_file(str(out)), strict=True)
    ours, theirs, transform = LANDED[fmt]
    src = sources["values"][fmt]
    want = src[theirs[0]][theirs[1]] if isinstance(theirs, tuple) else src[theirs]
    assert torch.equal(model.state_dict()[ours], transform(want) if transform else want)

    # the manifest is valid and its sha256 right: `vpcli weights verify` accepts it
    code, stdout, err = run(capsys, "weights", "verify", fmt, "--manifest", rec["manifest"], "--json")
    assert code == 0 and json.loads(stdout)["status"] == "ok", err


def test_a_converted_slamp_predicts_by_name(sources, tmp_path, capsys, monkeypatch):
    import cv2
    out = tmp_path / "w" / "slamp-authors.safetensors"
    code, _, err = convert(capsys, sources, "slamp-official", out, "--fp16")
    assert code == 0, err
    clip = tmp_path / "clip"
    clip.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(clip / f"{i}.png"), (rng.random((64, 64)) * 255).astype(np.uint8))
    monkeypatch.setenv("VPCLI_MANIFEST", str(out.with_name("slamp-authors.manifest.yaml")))
    code, _, err = run(capsys, "predict", clip, "--weights", "slamp-authors", "--horizon", 1, "--out", tmp_path / "p")
    assert code == 0, err
    meta = json.loads((tmp_path / "p" / "clip" / "meta.json").read_text())
    assert meta["weights"]["name"] == "slamp-authors" and meta["weights"]["sha256"] == sha256(out)


def test_converted_pwcnet_and_deeplab_load_through_weights(sources, tmp_path, capsys):
    from vpcli.engine.segment_runner import load_segmenter
    from vpcli.preprocess.pwcnet import PWCNetFlow
    for fmt in ("pwcnet-sniklaus", "deeplab-vainf"):
        assert convert(capsys, sources, fmt, tmp_path / f"{fmt}.safetensors")[0] == 0
    est = PWCNetFlow(weights=tmp_path / "pwcnet-sniklaus.safetensors")  # as `vpcli flow --weights FILE`
    assert est.describe()["weights_sha256"] == sha256(tmp_path / "pwcnet-sniklaus.safetensors")
    seg = load_segmenter(tmp_path / "deeplab-vainf.safetensors")  # as `vpcli segment --weights FILE`
    assert seg.num_classes == 19 and seg.config.input_size == (1024, 2048)


def test_usage_errors_are_one_line_and_write_nothing(sources, tmp_path, capsys):
    out = tmp_path / "out" / "o.safetensors"
    cases = [
        (["--from", "pwcnet-sniklau", sources["pwcnet-sniklaus"]], 2,
         ("error: unknown format 'pwcnet-sniklau' (hint: did you mean 'pwcnet-sniklaus'? formats: slamp-official, "
          "deeplab-vainf, pwcnet-sniklaus)")),
        (["--from", "deeplab-vainf", sources["deeplab-vainf"]], 2,
         ("error: --from deeplab-vainf needs --arch (hint: pass --arch (mobilenet | resnet50 | resnet101) matching "
          "the checkpoint)")),
        (["--from", "deeplab-vainf", sources["deeplab-vainf"], "--arch", "mobilnet"], 2,
         ("error: unknown --arch 'mobilnet' (hint: did you mean 'mobilenet'? choose one of mobilenet, resnet50, "
          "resnet101)")),
        (["--from", "slamp-official", sources["slamp-official"]], 2, "error: --from slamp-official needs --config"),
        (["--from", "pwcnet-sniklaus", sources["pwcnet-sniklaus"], "--arch", "mobilenet"], 2,
         "error: --arch does not apply to --from pwcnet-sniklaus (hint: --from pwcnet-sniklaus takes no format options)"),
        (["--from", "pwcnet-sniklaus", tmp_path / "missing.pytorch"], 1,
         f"error: {tmp_path / 'missing.pytorch'} does not exist (hint: pass the checkpoint file of sniklaus/pytorch-pwc)"),
    ]
    for args, code, message in cases:
        got, stdout, err = run(capsys, "weights", "convert", *args, "--out", out)
        assert (got, stdout) == (code, ""), err
        assert err.startswith(message) and err.count("\n") == 1, err
        assert not out.parent.exists()  # nothing written, not even the folder
    got, _, err = run(capsys, "weights", "convert", "--from", "pwcnet-sniklaus", sources["pwcnet-sniklaus"],
                      "--out", out.with_suffix(".pt"))
    assert got == 2 and "must end in .safetensors" in err and not out.parent.exists()


def test_bad_checkpoints_name_what_is_wrong(sources, tmp_path, capsys):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    junk = src_dir / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    pwc = dict(sources["values"]["pwcnet-sniklaus"])
    pwc.pop("moduleRefiner.moduleMain.12.bias")
    torch.save(pwc, src_dir / "pwc_missing.pytorch")
    slamp = {c: dict(sd) if isinstance(sd, dict) else sd for c, sd in sources["values"]["slamp-official"].items()}
    slamp["pixel_encoder"]["c1.main.0.weight"] = torch.zeros(8, 1, 3, 3)
    torch.save(slamp, src_dir / "slamp_wrong_shape.pth")
    torch.save({"pixel_encoder": torch.nn.Linear(2, 2)}, src_dir / "slamp_modules.pth")  # what train.py writes
    cases = [
        ("pwcnet-sniklaus", junk, (), "error: cannot read PWC-Net weights"),
        ("deeplab-vainf", junk, ("--arch", "mobilenet"), f"error: cannot read {junk} as a PyTorch checkpoint"),
        ("slamp-official", junk, SLAMP_ARGS, f"error: {junk} is not a PyTorch checkpoint"),
        ("pwcnet-sniklaus", src_dir / "pwc_missing.pytorch", (),
         "error: PWC-Net weights do not match the architecture: 1 missing (e.g. ['context.net.12.bias'])"),
        ("deeplab-vainf", sources["deeplab-vainf"], ("--arch", "resnet50"),
         "error: state dict does not match VainF's deeplabv3plus_resnet50 (unexpected: backbone.low_level_features"),
        ("deeplab-vainf", sources["deeplab-vainf"], ("--arch", "mobilenet", "--num-classes", "21"),
         "error: the checkpoint has 19 classes, 21 were asked for"),
        ("slamp-official", src_dir / "slamp_wrong_shape.pth", SLAMP_ARGS,
         ("error: the converted SLAMP weights do not fit this model (shape: pixel_encoder.c1.0.weight (8, 1, 3, 3) "
          "vs (8, 1, 4, 4))")),
        ("slamp-official", sources["slamp-official"], ("--config", "slamp-mmnist-tiny"),
         "error: the converted SLAMP weights do not fit this model (shape: mask_decoder.c1.0.0.weight"),
        ("slamp-official", src_dir / "slamp_modules.pth", SLAMP_ARGS, "pickles whole modules"),
    ]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for fmt, src, extra, message in cases:
        code, stdout, err = run(capsys, "weights", "convert", "--from", fmt, src, "--out", out_dir / "o.safetensors",
                                *extra)
        assert (code, stdout) == (1, ""), err
        assert message in err and err.startswith("error: ") and err.count("\n") == 1 and "(hint: " in err, err
        assert not any(out_dir.iterdir())  # no output, no manifest, no temporary


def test_existing_output_needs_overwrite(sources, tmp_path, capsys):
    out = tmp_path / "pwc.safetensors"
    assert convert(capsys, sources, "pwcnet-sniklaus", out)[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    code, _, err = convert(capsys, sources, "pwcnet-sniklaus", out)
    assert code == 1 and err == f"error: {out} already exists (hint: pass --overwrite to replace it, or choose " \
                                "another --out)\n"
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    out.unlink()  # the manifest alone is protected too
    code, _, err = convert(capsys, sources, "pwcnet-sniklaus", out)
    assert code == 1 and "pwc.manifest.yaml already exists" in err and not out.exists()
    code, stdout, err = convert(capsys, sources, "pwcnet-sniklaus", out, "--overwrite", "--name", "pwc")
    assert code == 0 and stdout.startswith(f"wrote {out} (") and stdout.rstrip().endswith("pwc.manifest.yaml"), err


def test_deeplab_fp16_with_vainf_arch_name(sources, tmp_path, capsys):
    # What `python -m vpcli.weights.convert_deeplab` ran before that upward-importing shim was
    # dropped (issue 12): VainF's own deeplabv3plus_* name and --fp16.
    out = tmp_path / "vainf.safetensors"
    code, _, err = run(capsys, "weights", "convert", "--from", "deeplab-vainf", sources["deeplab-vainf"],
                       "--out", out, "--arch", "deeplabv3plus_mobilenet", "--fp16")
    assert code == 0, err
    assert load_file(str(out))["classifier.weight"].dtype == torch.float16
    assert (tmp_path / "vainf.manifest.yaml").exists()
