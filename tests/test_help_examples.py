"""Every `Example:` in vpcli's `--help` texts runs, as written, and exits 0.

The examples are read from the command tree (the same text `--help` renders), so an example added
without a way to run it here fails `test_every_example_is_known`. Each example runs in a fresh copy
of a small world holding the files the examples name (`clip.mp4`, `clips/`, the checkpoint files
`vpcli weights convert` reads); `A, then B` runs A and B in order in the same folder. The one
example that needs the internet (`vpcli weights download pwcnet-sniklaus`) runs against a local
stand-in server that serves a file of the published layout at the entry's name.
"""
from __future__ import annotations

import glob
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hub_server import StandInHub
from vpcli.cli.app import app, main

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def help_texts():
    """(command path, help text) for the root, every group and every command."""
    from typer.main import get_command

    def walk(cmd, path):
        yield path, cmd.help or ""
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, f"{path} {name}")

    yield from walk(get_command(app), "vpcli")


def examples() -> dict[str, list[str]]:
    """Each example -> the commands of its `, then` chain."""
    found = {}
    for _, text in help_texts():
        flat = " ".join(text.split())
        for m in re.finditer(r"Example: (vpcli .+?)(?=(?: Example:|$))", flat):
            chain = [c.strip().rstrip(".") for c in m.group(1).split(", then ")]
            found[m.group(1).strip()] = chain
    from vpcli.api import WEIGHTS_FORMATS
    for info in WEIGHTS_FORMATS.values():  # `vpcli weights convert --help` lists one per format
        found[info["example"]] = [info["example"]]
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The files the examples name: a 64x128 street clip, a folder of clips (MP4 and AVI), and
    one checkpoint per `weights convert` format with its project's layout and random values."""
    from test_deeplab import random_vainf_state
    from test_pwcnet import sniklaus_state
    from test_slamp import authors_dcgan_layout
    from vpcli.data.synth_street import SynthStreetConfig, render_sequence
    from vpcli.io.video import write_video

    root = tmp_path_factory.mktemp("world")
    for k, name in enumerate(("street_a.mp4", "street_b.avi", "street_c.avi")):
        seq = render_sequence(SynthStreetConfig(height=64, width=128, length=16), seed=100 + k)
        write_video(root / "clips" / name, seq.rgb)
        if k == 0:
            write_video(root / "clip.mp4", seq.rgb)
    g = torch.Generator().manual_seed(0)
    slamp = {c: {k: torch.randn(s, generator=g) if s else torch.tensor(7) for k, s in sd.items()}
             for c, sd in authors_dcgan_layout().items()}  # slamp-mmnist's widths
    torch.save(slamp, root / "slamp_mnist.sd.pth")
    torch.save({"model_state": random_vainf_state("deeplabv3plus_mobilenet", seed=3)},
               root / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth")
    torch.save(sniklaus_state(seed=2), root / "network-default.pytorch")
    return root


@pytest.fixture
def stand_in_downloads(tmp_path, monkeypatch, world):
    """The bundled manifest with the URL entries the examples download served from 127.0.0.1."""
    from vpcli.weights import hashing, manifest
    server = StandInHub(hub_headers=False).start()
    served = {"pwcnet-sniklaus": "network-default.pytorch",
              "deeplabv3plus-mobilenet-cityscapes-vainf": "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"}
    doc = yaml.safe_load(manifest.BUNDLED_MANIFEST.read_text())
    for e in doc["weights"]:
        if e["name"] in served:
            file = served[e["name"]]
            url = server.page(f"/files/{file}", (world / file).read_bytes(), "application/octet-stream")
            e["source"] = {"url": url, "filename": file}
    copy = tmp_path / "weights_manifest.yaml"
    copy.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setattr(manifest, "BUNDLED_MANIFEST", copy)
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VPCLI_MANIFEST", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # tests/conftest.py: the server is on 127.0.0.1
    hashing.clear_memory()
    yield
    hashing.clear_memory()
    server.stop()


def test_every_example_is_known():
    """A help text without an example, or an example that names a placeholder, fails here."""
    ex = examples()
    assert len(ex) >= 20
    for text in ex:
        assert not re.search(r"\b(NAME|RUN|PATH|FILE)\b", text), f"placeholder in example: {text}"
    commands = {p for p, _ in help_texts()}
    documented = {" ".join(c[0].split()[:3]) for c in ex.values()} | {" ".join(c[0].split()[:2]) for c in ex.values()}
    for path, text in help_texts():
        leaf = len(path.split()) > 1
        if leaf and path not in ("vpcli weights convert",):
            assert "Example:" in text, f"`{path} --help` has no example"
    assert "vpcli predict" in documented and len(commands) > 10


def _run(capsys, command: str) -> tuple[int, str]:
    args = []
    for tok in shlex.split(command)[1:]:
        args.extend(sorted(glob.glob(tok)) if "*" in tok else [tok])  # what the shell would expand
    with pytest.raises(SystemExit) as exc:
        main(["--threads", "1", *args])
    out, err = capsys.readouterr()
    return exc.value.code, out + err


@pytest.mark.parametrize("example", sorted(examples()))
def test_example_runs(example, world, tmp_path, capsys, monkeypatch, request):
    if "weights download" in example:
        request.getfixturevalue("stand_in_downloads")
    here = tmp_path / "here"
    shutil.copytree(world, here)
    monkeypatch.chdir(here)
    for command in examples()[example]:
        code, output = _run(capsys, command)
        assert code == 0, f"{command}\n{output}"


def test_predict_example_writes_the_documented_files(world, tmp_path, capsys, monkeypatch):
    shutil.copytree(world, tmp_path / "here")
    monkeypatch.chdir(tmp_path / "here")
    assert _run(capsys, "vpcli predict clip.mp4 --method slamp --horizon 30 --samples 5 --out preds/")[0] == 0
    from vpcli.io.video import read_video
    sample = read_video(Path("preds/clip/sample_004.mp4"))[0]
    assert sample.shape == (30, 64, 128, 3) and np.isfinite(sample).all()


def test_readme_quick_start_runs(tmp_path, capsys, monkeypatch):
    """The vpcli commands of README's quick start, with /tmp/vpcli-demo moved into tmp_path."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Quick start"):]
    block = section[section.index("```bash") + 7:]
    line = block[:block.index("```")].strip().splitlines()[0]
    commands = [c.strip() for c in line.split("&&") if c.strip().startswith("vpcli ")]
    assert [c.split()[1] for c in commands] == ["data", "predict"]
    monkeypatch.chdir(tmp_path)
    for command in commands:
        code, output = _run(capsys, command.replace("/tmp/vpcli-demo", str(tmp_path / "demo")))
        assert code == 0, f"{command}\n{output}"
    out = tmp_path / "demo/preds/seq_00000"
    for name in ("sample_000.mp4", "sample_003.mp4", "grid.mp4", "meta.json"):
        assert (out / name).is_file(), name
