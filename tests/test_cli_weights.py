"""`vpcli weights list|download|verify|info`, run in-process through `vpcli.cli.app.main`."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hub_server import entry, hub, hub_entry, sha256, weights_env, write_manifest  # noqa: F401
from vpcli.cli.app import main

BUNDLED = b"bundled weights " * 16
REMOTE = b"remote weights " * 16


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.fixture
def setup(hub, weights_env, monkeypatch):
    """A manifest with one bundled entry (present) and one Hub entry (not downloaded yet)."""
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    (weights_env / "assets").mkdir()
    (weights_env / "assets" / "local.safetensors").write_bytes(BUNDLED)
    m = write_manifest(weights_env / "manifest.yaml", [
        entry("local-net", {"bundled": "assets/local.safetensors"}, BUNDLED, task="flow", arch="pwcnet",
              metrics={"epe": 2.5}, description="a bundled test net", works_on=["real-video"]),
        hub_entry(hub, "remote-net", REMOTE, task="segmenter", arch="deeplabv3plus"),
    ])
    return m


def test_list_table_and_json(setup, capsys):
    code, out, err = run(capsys, "weights", "list", "--manifest", str(setup))
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    lines = {row[0]: row for row in rows if row and row[0].endswith("-net")}
    assert lines["local-net"][1:] == ["flow", "pwcnet", "real-video", "bundled", "bundled", "bundled"]
    assert lines["remote-net"][1:] == ["segmenter", "deeplabv3plus", "-", "hub", "not", "downloaded", "published",
                                       "sha256"]
    assert "verified by" in out.splitlines()[1] and "works on" in out.splitlines()[1]

    code, out, _ = run(capsys, "weights", "list", "--manifest", str(setup), "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["name"] for r in records] == ["local-net", "remote-net"]
    assert records[0]["status"] == "bundled" and records[0]["metrics"] == {"epe": 2.5}
    assert records[1]["source"]["kind"] == "hub" and records[1]["path"] is None


def test_list_reads_manifests_from_env(setup, capsys, monkeypatch):
    monkeypatch.setenv("VPCLI_MANIFEST", str(setup))
    code, out, _ = run(capsys, "weights", "list", "--json")
    assert code == 0 and len(out.splitlines()) == 2


def test_list_with_nothing_defined(weights_env, capsys):
    code, out, err = run(capsys, "weights", "list")
    assert code == 0 and out == "" and "no weights defined" in err


def test_info_text_json_and_unknown(setup, capsys):
    code, out, _ = run(capsys, "weights", "info", "local-net", "-m", str(setup))
    assert code == 0
    assert f"sha256       {sha256(BUNDLED)}" in out and "a bundled test net" in out and "epe=2.5" in out

    code, out, _ = run(capsys, "weights", "info", "remote-net", "-m", str(setup), "--json")
    record = json.loads(out)
    assert code == 0 and record["task"] == "segmenter" and record["status"] == "not downloaded"
    assert len(record["source"]["revision"]) == 40 and record["manifest"] == str(setup)

    code, out, err = run(capsys, "weights", "info", "remote-nte", "-m", str(setup))
    assert code == 1 and out == ""
    assert err == "error: unknown weights 'remote-nte' (hint: did you mean: remote-net?)\n"


def test_download_then_list_shows_cached(setup, hub, capsys):
    code, out, err = run(capsys, "weights", "download", "remote-net", "-m", str(setup))
    assert code == 0, err
    assert "remote-net: ok (" in err and str(Path(os.environ["HF_HOME"])) in err
    code, out, _ = run(capsys, "weights", "list", "-m", str(setup), "--json")
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["bundled", "cached"]

    code, out, err = run(capsys, "weights", "download", "--all", "-m", str(setup), "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["ok"] for r in records] == [True, True]
    assert records[1]["sha256"] == sha256(REMOTE)


def test_download_all_skips_entries_without_a_published_sha256(setup, hub, capsys, weights_env):
    import yaml
    data = yaml.safe_load(setup.read_text())
    revision = hub.add("upstream", "model.pth", REMOTE * 2)
    data["weights"].append(entry("third-party", {"url": hub.url(f"/upstream/resolve/{revision}/model.pth")},
                                 sha="unpublished"))
    setup.write_text(yaml.safe_dump(data, sort_keys=False))
    code, out, err = run(capsys, "weights", "download", "--all", "-m", str(setup), "--json")
    assert code == 0, err
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["local-net", "remote-net"]
    assert "skipped third-party: its publisher gives no sha256; run `vpcli weights download third-party`" in err
    assert not (weights_env / "vpcli_cache" / "url").exists()
    code, out, err = run(capsys, "weights", "download", "third-party", "-m", str(setup))  # named: fetched
    assert code == 0 and f"recorded sha256 {sha256(REMOTE * 2)}" in err
    code, out, err = run(capsys, "weights", "download", "--all", "-m", str(setup), "--json")  # now pinned
    assert code == 0 and "skipped" not in err and len(out.splitlines()) == 3


def test_download_usage_and_failures(setup, hub, capsys):
    code, _, err = run(capsys, "weights", "download", "-m", str(setup))
    assert code == 2 and err.startswith("error: no weights named")
    code, _, err = run(capsys, "weights", "download", "remote-net", "--all", "-m", str(setup))
    assert code == 2 and "not both" in err

    hub.stop()
    code, out, err = run(capsys, "weights", "download", "remote-net", "nope", "-m", str(setup))
    assert code == 1 and out == ""
    assert "cannot reach" in err and "unknown weights 'nope'" in err and "2 of 2 inputs failed" in err
    assert "Traceback" not in err


def test_verify_ok_missing_and_mismatch(setup, capsys, weights_env):
    code, out, err = run(capsys, "weights", "verify", "-m", str(setup))
    assert code == 0, err
    assert out.splitlines()[0].split()[:2] == ["ok", "local-net"]
    assert out.splitlines()[1].split()[:3] == ["missing", "remote-net", "not"]  # not downloaded: fine
    assert "1 ok, 0 mismatch, 1 missing" in err

    code, _, _ = run(capsys, "weights", "verify", "remote-net", "-m", str(setup))
    assert code == 1  # asked for by name and not there

    bundled = weights_env / "assets" / "local.safetensors"
    bundled.write_bytes(b"tampered")
    code, out, err = run(capsys, "weights", "verify", "-m", str(setup), "--json")
    assert code == 1
    first = json.loads(out.splitlines()[0])
    assert first["status"] == "mismatch" and first["actual"] == sha256(b"tampered")
    assert first["expected"] == sha256(BUNDLED) and "sha256 mismatch" in first["message"]
    assert bundled.exists()  # a bundled file is reported, never deleted


def test_verify_deletes_a_bad_download(setup, capsys):
    assert run(capsys, "weights", "download", "remote-net", "-m", str(setup))[0] == 0
    code, out, _ = run(capsys, "weights", "info", "remote-net", "-m", str(setup), "--json")
    cached = Path(json.loads(out)["path"])
    Path(os.path.realpath(cached)).write_bytes(b"bit rot")
    code, out, err = run(capsys, "weights", "verify", "remote-net", "-m", str(setup))
    assert code == 1 and out.startswith("mismatch remote-net") and sha256(b"bit rot") in out
    assert not cached.exists()
    assert run(capsys, "weights", "download", "remote-net", "-m", str(setup))[0] == 0  # fetched again


def test_bad_manifest_is_a_usage_error(weights_env, capsys):
    bad = weights_env / "bad.yaml"
    bad.write_text("version: 1\nweights:\n  - name: x\n    taks: flow\n")
    code, out, err = run(capsys, "weights", "list", "--manifest", str(bad))
    assert code == 2 and out == ""
    assert err.startswith(f"error: {bad}: weights[0] 'x': unknown field 'taks' (hint: did you mean 'task'?)")
    assert err.count("\n") == 1
