"""The bundled weights manifest: the repository-root `weights_manifest.yaml` is the one vpcli reads.

In a checkout (editable install) the package reads the root file in place; a wheel build copies
it into the package (setup.py), and the installed package reads that copy. Either way the
manifest's bundled paths start from the vpcli package folder, where assets/weights/ lives.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import yaml

import vpcli
from vpcli.weights import BundledSource, load_manifest, load_manifests
from vpcli.weights import manifest as manifest_mod

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(vpcli.__file__).resolve().parent


def test_the_package_reads_the_repository_root_manifest():
    assert manifest_mod.PACKAGE_DIR == PACKAGE
    assert manifest_mod.BUNDLED_MANIFEST == ROOT / "weights_manifest.yaml"
    assert not (PACKAGE / "weights_manifest.yaml").exists(), "a stale copy inside the package would be shadowed"
    reg = load_manifests(env=False)
    assert list(reg.manifests) == [ROOT / "weights_manifest.yaml"]
    names = [e["name"] for e in yaml.safe_load((ROOT / "weights_manifest.yaml").read_text())["weights"]]
    assert reg.names() == names and "slamp-movingdigits" in names


def test_bundled_entries_resolve_inside_the_package_folder():
    entries = [e for e in load_manifest(manifest_mod.BUNDLED_MANIFEST) if isinstance(e.source, BundledSource)]
    assert len(entries) >= 5
    for e in entries:
        assert e.source.relpath.startswith("assets/weights/")
        assert e.source.path == PACKAGE / e.source.relpath
        assert e.source.path.is_file(), f"{e.name}: {e.source.path} is missing"


def test_an_installed_layout_reads_the_copy_inside_the_package(tmp_path, monkeypatch):
    # site-packages/vpcli/ with the copy the wheel build puts there, and no pyproject.toml above it
    pkg = tmp_path / "site-packages" / "vpcli"
    (pkg / "assets" / "weights").mkdir(parents=True)
    data = b"installed weights"
    (pkg / "assets" / "weights" / "w.safetensors").write_bytes(data)
    (pkg / "weights_manifest.yaml").write_text(yaml.safe_dump({"version": 1, "weights": [{
        "name": "w", "task": "flow", "arch": "pwcnet", "config": {}, "source": {"bundled": "assets/weights/w.safetensors"},
        "sha256": hashlib.sha256(data).hexdigest(), "license": "MIT", "trained_on": "test", "metrics": {}}]}))
    monkeypatch.setattr(manifest_mod, "PACKAGE_DIR", pkg)
    locations = manifest_mod._bundled_locations()
    assert locations == (pkg / "weights_manifest.yaml",)
    monkeypatch.setattr(manifest_mod, "BUNDLED_LOCATIONS", locations)
    (entry,) = load_manifest(pkg / "weights_manifest.yaml")
    assert entry.source.path == pkg / "assets" / "weights" / "w.safetensors"
    # any other manifest still resolves from its own folder
    other = tmp_path / "elsewhere" / "m.yaml"
    other.parent.mkdir()
    shutil.copy(pkg / "weights_manifest.yaml", other)
    assert load_manifest(other)[0].source.path == other.parent / "assets" / "weights" / "w.safetensors"
