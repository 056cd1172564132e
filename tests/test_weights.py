"""Weights: manifest validation, resolution (path / bundled / stand-in Hub / URL), sha256 checks."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from hub_server import StandInHub, entry, hub, hub_entry, sha256, weights_env, write_manifest  # noqa: F401
from vpcli.errors import ChecksumError, ManifestError, WeightsError
from vpcli.weights import (hashing, load_manifest, load_manifests, locate, resolve, resolve_weights,
                           verify_entry)

DATA = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 4  # any bytes will do


@pytest.fixture
def online(hub, weights_env, monkeypatch):
    """Stand-in Hub running, HF_ENDPOINT pointing at it, caches under tmp_path."""
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    return hub


def resolve_gets(hub: StandInHub) -> int:
    return sum(1 for m, p in hub.requests if m == "GET" and "/resolve/" in p)


def manifest_with(tmp_path: Path, *entries: dict, name: str = "m.yaml") -> Path:
    return write_manifest(tmp_path / "manifests" / name, list(entries))


# --- Hub downloads -----------------------------------------------------------------------------

def test_hub_download_is_verified_and_then_served_from_cache(online, tmp_path):
    m = manifest_with(tmp_path, hub_entry(online, "tiny", DATA))
    progress = []
    path = resolve("tiny", manifests=m, progress=lambda done, total: progress.append((done, total)))
    assert path.read_bytes() == DATA
    assert progress[-1] == (len(DATA), len(DATA))  # byte counts reach the caller's callback
    assert Path(os.environ["HF_HOME"]) in path.parents  # HF_HOME set after import is honoured
    assert resolve_gets(online) == 1

    before = len(online.requests)
    again = resolve_weights("tiny", manifests=[m])
    assert again.path == path and again.sha256 == sha256(DATA) and again.source == "hub"
    assert len(online.requests) == before  # a pinned commit in the cache needs no request at all


def test_lfs_style_redirect_to_another_host(weights_env, monkeypatch, tmp_path):
    with StandInHub(redirect=True) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        m = manifest_with(tmp_path, hub_entry(hub, "big", DATA * 3))
        assert resolve("big", manifests=[m]).read_bytes() == DATA * 3
        assert ("GET", f"/cdn/{sha256(DATA * 3)}") in hub.requests


def test_offline_uses_cache_once_server_is_stopped(online, tmp_path, monkeypatch):
    m = manifest_with(tmp_path, hub_entry(online, "tiny", DATA))
    path = resolve("tiny", manifests=[m])
    online.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("tiny", manifests=[m]) == path
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve("tiny", manifests=[m]) == path  # also without the flag: cached pins need no network


def test_offline_and_not_cached_is_a_clear_error(online, tmp_path, monkeypatch):
    m = manifest_with(tmp_path, hub_entry(online, "tiny", DATA))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as e:
        resolve("tiny", manifests=[m])
    msg = str(e.value)
    assert "'tiny'" in msg and "HF_HUB_OFFLINE" in msg and "vpcli weights download tiny" in msg
    assert "\n" not in msg
    assert online.count() == 0


def test_download_false_never_touches_the_network(online, tmp_path):
    m = manifest_with(tmp_path, hub_entry(online, "tiny", DATA))
    with pytest.raises(WeightsError, match="downloads are disabled"):
        resolve("tiny", manifests=[m], download=False)
    assert online.count() == 0


def test_corrupted_cache_file_is_detected_deleted_and_redownloaded(online, tmp_path):
    m = manifest_with(tmp_path, hub_entry(online, "tiny", DATA))
    path = resolve("tiny", manifests=[m])
    blob = Path(os.path.realpath(path))
    blob.write_bytes(b"bit rot")

    with pytest.raises(ChecksumError) as e:
        resolve("tiny", manifests=[m])
    msg = str(e.value)
    assert sha256(DATA) in msg and sha256(b"bit rot") in msg and "'tiny'" in msg and str(path) in msg
    assert not path.exists() and not path.is_symlink() and not blob.exists()  # never reused

    again = resolve("tiny", manifests=[m])
    assert again.read_bytes() == DATA
    assert resolve_gets(online) == 2


def test_corrupted_cache_file_offline_errors_instead_of_returning_it(online, tmp_path, monkeypatch):
    m = manifest_with(tmp_path, hub_entry(online, "tiny", DATA))
    Path(os.path.realpath(resolve("tiny", manifests=[m]))).write_bytes(b"bit rot")
    online.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ChecksumError):
        resolve("tiny", manifests=[m])
    with pytest.raises(WeightsError, match="not in the Hugging Face cache") as e:
        resolve("tiny", manifests=[m])
    assert not isinstance(e.value, ChecksumError)


def test_hub_serving_other_bytes_than_the_manifest_pins(online, tmp_path):
    bad = hub_entry(online, "tiny", DATA, sha=sha256(b"what the manifest expects"))
    m = manifest_with(tmp_path, bad)
    with pytest.raises(ChecksumError, match=sha256(DATA)):
        resolve("tiny", manifests=[m])
    assert locate(load_manifest(m)[0]).status == "not downloaded"


@pytest.mark.parametrize("what, expect", [
    ("file", ["missing.safetensors not found in vpcli/test-weights", "404"]),
    ("repo", ["repo nobody/nothing not found", "404"]),
])
def test_404_is_one_clear_line(online, tmp_path, what, expect):
    e = hub_entry(online, "tiny", DATA)
    if what == "file":
        e["source"]["hub"]["filename"] = "missing.safetensors"
    else:
        e["source"]["hub"]["repo_id"] = "nobody/nothing"
    m = manifest_with(tmp_path, e)
    with pytest.raises(WeightsError) as err:
        resolve("tiny", manifests=[m])
    msg = str(err.value)
    assert all(s in msg for s in expect), msg
    assert "'tiny'" in msg and online.endpoint in msg and "\n" not in msg


def test_server_down_and_nothing_cached_fails_fast(online, tmp_path):
    m = manifest_with(tmp_path, hub_entry(online, "tiny", DATA))
    online.stop()
    t0 = time.monotonic()
    with pytest.raises(WeightsError) as e:
        resolve("tiny", manifests=[m])
    assert time.monotonic() - t0 < 5  # no 25 s of client-side retries
    msg = str(e.value)
    assert f"cannot reach {online.endpoint}" in msg and "'tiny'" in msg and "refused" in msg.lower()
    assert "vpcli weights download tiny" in msg and "\n" not in msg


def test_endpoint_that_is_not_a_hub(weights_env, monkeypatch, tmp_path):
    with StandInHub(hub_headers=False) as plain:
        monkeypatch.setenv("HF_ENDPOINT", plain.endpoint)
        m = manifest_with(tmp_path, hub_entry(plain, "tiny", DATA))
        with pytest.raises(WeightsError) as e:
            resolve("tiny", manifests=[m])
    msg = str(e.value)
    assert "X-Repo-Commit" in msg and "HF_ENDPOINT" in msg and "\n" not in msg


# --- pinned URLs (served by the same stand-in; http is allowed for loopback hosts only) ---------

def url_entry(hub: StandInHub, name: str, data: bytes, **kw) -> dict:
    hub.add("url/files", "x", data)  # the /cdn/<sha> route serves any stored bytes by hash
    return entry(name, {"url": hub.url(f"/cdn/{sha256(data)}")}, data, **kw)


def test_url_download_is_cached_by_hash(online, tmp_path, weights_env):
    m = manifest_with(tmp_path, url_entry(online, "direct", DATA))
    progress = []
    path = resolve("direct", manifests=[m], progress=lambda done, total: progress.append((done, total)))
    assert path.read_bytes() == DATA and progress[-1] == (len(DATA), len(DATA))
    assert path == weights_env / "vpcli_cache" / "url" / sha256(DATA) / sha256(DATA)
    n = online.count()
    assert resolve("direct", manifests=[m]) == path and online.count() == n
    assert not list(path.parent.glob(".*part*"))  # the temporary was renamed, not left behind


def test_url_with_wrong_content_caches_nothing(online, tmp_path):
    m = manifest_with(tmp_path, url_entry(online, "direct", DATA, sha=sha256(b"other")))
    with pytest.raises(ChecksumError, match="expected " + sha256(b"other")):
        resolve("direct", manifests=[m])
    assert locate(load_manifest(m)[0]).status == "not downloaded"


def test_url_errors(online, tmp_path, monkeypatch):
    e = entry("gone", {"url": online.url("/cdn/" + "0" * 64)}, sha="0" * 64)
    m = manifest_with(tmp_path, e)
    with pytest.raises(WeightsError, match="HTTP 404") as err:
        resolve("gone", manifests=[m])
    assert "\n" not in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="not downloaded"):
        resolve("gone", manifests=[m])


# --- trust on first use: url entries whose publisher gives no sha256 ---------------------------

UPSTREAM = "f" * 40  # a fixed "commit" of the stand-in: the same URL can be made to serve new bytes


def unpublished_entry(hub: StandInHub, name: str, data: bytes, **source) -> dict:
    """An entry like the bundled VainF/sniklaus ones: a fixed URL, `sha256: unpublished`."""
    hub.add("upstream", "model.pth", data, revision=UPSTREAM)
    return entry(name, {"url": hub.url(f"/upstream/resolve/{UPSTREAM}/model.pth"), **source}, sha="unpublished")


def test_unpublished_hash_is_recorded_on_first_download_and_pins_every_later_load(online, tmp_path):
    from vpcli.weights import first_use_dir, recorded_sha256, resolve_entry

    m = manifest_with(tmp_path, unpublished_entry(online, "up", DATA))
    e = load_manifest(m)[0]
    assert e.sha256 is None and not e.published and e.to_record()["sha256"] == "unpublished"
    # An ordinary load never fetches it: the first download must be asked for.
    with pytest.raises(WeightsError, match="no published sha256") as err:
        resolve("up", manifests=[m])
    assert "vpcli weights download up" in err.value.hint and "--weights" in err.value.hint
    url_cache = tmp_path / "vpcli_cache" / "url"
    assert online.count() == 0 and not url_cache.exists()
    assert verify_entry(e).status == "missing" and verify_entry(e).expected == "unpublished"

    first = resolve_entry(e, trust_first_use=True)
    assert first.first_use and first.sha256 == sha256(DATA) and first.path.read_bytes() == DATA
    record = recorded_sha256(e)
    assert record["sha256"] == sha256(DATA) and record["url"] == e.source.url and record["bytes"] == len(DATA)
    assert first.path.parent == first_use_dir(e) / "file" and url_cache in first.path.parents

    n = online.count()
    again = resolve_weights("up", manifests=[m])  # now pinned: loads without asking, and offline
    assert again.path == first.path and again.sha256 == sha256(DATA) and not again.first_use
    assert online.count() == n and verify_entry(e).status == "ok"

    # The upstream file changes under the same URL: a re-download is refused, nothing is cached.
    online.add("upstream", "model.pth", DATA[::-1], revision=UPSTREAM)
    first.path.unlink()
    with pytest.raises(ChecksumError, match="from its first download") as err:
        resolve("up", manifests=[m])
    assert sha256(DATA) in str(err.value) and sha256(DATA[::-1]) in str(err.value)
    assert not first.path.exists() and recorded_sha256(e)["sha256"] == sha256(DATA)
    with pytest.raises(ChecksumError):  # trust_first_use does not re-record over an existing pin
        resolve_entry(e, trust_first_use=True)

    # A cached copy changed on disk: refused and deleted; the record stays and says how to reset it.
    online.add("upstream", "model.pth", DATA, revision=UPSTREAM)
    path = resolve("up", manifests=[m])
    path.write_bytes(DATA[:-1] + b"!")
    hashing.clear_memory()
    with pytest.raises(ChecksumError, match="recorded at its first download") as err:
        resolve("up", manifests=[m])
    assert not path.exists() and str(first_use_dir(e)) in err.value.hint

    # A damaged record is not "no record": nothing re-records over it, the error says what to delete.
    record_file = first_use_dir(e) / "sha256.json"
    record_file.write_text("{")
    for call in (lambda: resolve("up", manifests=[m]), lambda: resolve_entry(e, trust_first_use=True)):
        with pytest.raises(WeightsError, match="first-use record of weights 'up'.* is damaged") as err:
            call()
        assert str(first_use_dir(e)) in err.value.hint
    assert locate(e).status == "damaged first-use record" and verify_entry(e).status == "mismatch"
    record_file.write_text(json.dumps({"sha256": sha256(DATA)}))
    assert resolve("up", manifests=[m]) == path

    # A new URL is a new source: it needs its own first download.
    moved = unpublished_entry(online, "up", DATA) | {"source": {"url": online.url(f"/cdn/{sha256(DATA)}")}}
    m2 = manifest_with(tmp_path, moved, name="moved.yaml")
    with pytest.raises(WeightsError, match="no published sha256"):
        resolve("up", manifests=[m2])


def test_unpublished_filename_and_html_pages(online, tmp_path):
    from vpcli.weights import recorded_sha256, resolve_entry

    from vpcli.weights import check_sha256

    m = manifest_with(tmp_path, unpublished_entry(online, "named", DATA, filename="best_x_os16.pth.tar"))
    e = load_manifest(m)[0]
    assert resolve_entry(e, trust_first_use=True).path.name == "best_x_os16.pth.tar"
    assert locate(e).status == "cached"
    # a file named like the record does not overwrite it
    m = manifest_with(tmp_path, unpublished_entry(online, "clash", DATA, filename="sha256.json"), name="clash.yaml")
    e = load_manifest(m)[0]
    assert resolve_entry(e, trust_first_use=True).path.read_bytes() == DATA
    assert recorded_sha256(e)["sha256"] == sha256(DATA) and resolve("clash", manifests=[m]).read_bytes() == DATA

    # Nothing to compare with: check_sha256 refuses without deleting the file it was given.
    stray = tmp_path / "stray.pth"
    stray.write_bytes(DATA)
    m = manifest_with(tmp_path, unpublished_entry(online, "never", DATA), name="never.yaml")
    with pytest.raises(WeightsError, match="no first download recorded one"):
        check_sha256(load_manifest(m)[0], stray)
    assert stray.read_bytes() == DATA

    # Text is a fine answer when the manifest's hash checks the bytes, never as a first download.
    plain = online.page("/plain/model.pth", DATA, "text/plain")
    m = manifest_with(tmp_path, entry("plain", {"url": plain}, DATA), name="plain.yaml")
    assert resolve("plain", manifests=[m]).read_bytes() == DATA
    m = manifest_with(tmp_path, entry("plain", {"url": plain}, sha="unpublished"), name="plain2.yaml")
    with pytest.raises(WeightsError, match=r"answered with text \(text/plain\)"):
        resolve_entry(load_manifest(m)[0], trust_first_use=True)

    # A host that answers with a web page (Google Drive's "cannot scan" page, a Dropbox preview).
    page = online.page("/drive/download", b"<html>Google Drive can't scan this file</html>")
    for sha in ("unpublished", sha256(DATA)):
        m = manifest_with(tmp_path, entry("page", {"url": page}, sha=sha), name=f"page-{sha[:4]}.yaml")
        e = load_manifest(m)[0]
        with pytest.raises(WeightsError, match=r"web page \(text/html\)") as err:
            resolve_entry(e, trust_first_use=True)
        assert "--weights /path/to/download" in err.value.hint and "\n" not in str(err.value)
        assert locate(e).status == "not downloaded" and recorded_sha256(e) is None
    assert not list((tmp_path / "vpcli_cache" / "url").rglob("*download*"))

    # A connection that drops mid-file: nothing is recorded or kept, the error says so.
    cut = online.page("/cut/model.pth", DATA[:100], "application/octet-stream", claimed_length=len(DATA))
    m = manifest_with(tmp_path, entry("cut", {"url": cut}, sha="unpublished"), name="cut.yaml")
    e = load_manifest(m)[0]
    with pytest.raises(WeightsError, match=f"ended after 100 of {len(DATA)} bytes"):
        resolve_entry(e, trust_first_use=True)
    assert recorded_sha256(e) is None and locate(e).status == "not downloaded"
    assert not list((tmp_path / "vpcli_cache" / "url" / "first-use").glob("cut-*/**/*model.pth*"))


# --- bundled files and explicit paths ----------------------------------------------------------

def test_bundled_file_is_relative_to_its_manifest_and_never_deleted(weights_env):
    folder = weights_env / "pkg"
    (folder / "assets").mkdir(parents=True)
    (folder / "assets" / "w.safetensors").write_bytes(DATA)
    m = write_manifest(folder / "manifest.yaml", [
        entry("good", {"bundled": "assets/w.safetensors"}, DATA),
        entry("stale", {"bundled": "assets/w.safetensors"}, sha="f" * 64),
        entry("absent", {"bundled": "assets/none.safetensors"}, DATA),
    ])
    assert resolve("good", manifests=[m]) == folder / "assets" / "w.safetensors"
    with pytest.raises(ChecksumError, match="reinstall"):
        resolve("stale", manifests=[m])
    assert (folder / "assets" / "w.safetensors").exists()
    with pytest.raises(WeightsError, match="bundled weights file for 'absent' is missing"):
        resolve("absent", manifests=[m])


def test_explicit_paths_are_used_as_is(weights_env, monkeypatch):
    f = weights_env / "mine.safetensors"
    f.write_bytes(DATA)
    assert resolve(f) == f
    r = resolve_weights(str(f))
    assert r.name is None and r.source == "path" and r.sha256 == sha256(DATA)
    with pytest.raises(WeightsError, match="weights file not found"):
        resolve(str(weights_env / "nope.safetensors"))
    # A bare word is a manifest name first: an output folder called like an entry does not shadow it.
    m = write_manifest(weights_env / "m.yaml", [entry("tiny", {"bundled": "mine.safetensors"}, DATA)])
    monkeypatch.chdir(weights_env)
    (weights_env / "tiny").mkdir()
    assert resolve("tiny", manifests=[m]) == f
    assert resolve("mine.safetensors", manifests=[m]) == Path("mine.safetensors")  # not a name: a file


def test_unknown_name_suggests_close_matches(weights_env):
    m = write_manifest(weights_env / "m.yaml", [entry("slamp-mmnist", {"bundled": "x"}, DATA)])
    with pytest.raises(WeightsError, match="unknown weights 'slamp-mnist'.*did you mean: slamp-mmnist"):
        resolve("slamp-mnist", manifests=[m])


# --- sha256 memo -------------------------------------------------------------------------------

def test_hash_memo_skips_rehash_until_the_file_changes(weights_env, monkeypatch):
    calls = []
    real = hashing.hash_file
    monkeypatch.setattr(hashing, "hash_file", lambda p: calls.append(p) or real(p))
    f = weights_env / "w.bin"
    f.write_bytes(DATA)

    assert hashing.file_sha256(f) == sha256(DATA) and len(calls) == 1
    assert hashing.file_sha256(f) == sha256(DATA) and len(calls) == 1  # memory
    hashing.clear_memory()
    assert hashing.file_sha256(f) == sha256(DATA) and len(calls) == 1  # JSON cache in $VPCLI_CACHE
    assert (weights_env / "vpcli_cache" / hashing.MEMO_FILE).is_file()

    f.write_bytes(DATA[::-1])  # new content (and mtime)
    assert hashing.file_sha256(f) == sha256(DATA[::-1]) and len(calls) == 2
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # same bytes, new mtime
    assert hashing.file_sha256(f) == sha256(DATA[::-1]) and len(calls) == 3
    assert hashing.file_sha256(f, trust_cache=False) and len(calls) == 4


def test_verify_rereads_even_when_size_and_mtime_are_unchanged(online, tmp_path):
    m = manifest_with(tmp_path, hub_entry(online, "tiny", DATA))
    path = resolve("tiny", manifests=[m])
    blob = Path(os.path.realpath(path))
    st = blob.stat()
    blob.write_bytes(bytes(len(DATA)))  # same size
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: the memo cannot tell
    result = verify_entry(load_manifest(m)[0])
    assert result.status == "mismatch" and result.actual == sha256(bytes(len(DATA)))
    assert not blob.exists()


# --- manifest validation -----------------------------------------------------------------------

def _valid() -> dict:
    return entry("ok", {"hub": {"repo_id": "org/repo", "revision": "a" * 40, "filename": "w.safetensors"}}, DATA)


def _without(key):
    def f(e):
        del e[key]
    return f


@pytest.mark.parametrize("mutate, expect", [
    (_without("license"), ["weights[0] 'ok'", "missing required field 'license'"]),
    (lambda e: e["source"]["hub"].update(revision="main..x"),  # branches are fine (pinned on first use)
     ["weights[0] 'ok'", "source.hub.revision", "40", "branch or tag", "'main..x'"]),
    (lambda e: e["source"]["hub"].update(revision="A" * 40), ["source.hub.revision"]),
    (lambda e: e.update(sourec=e.pop("source")), ["unknown field 'sourec'", "did you mean 'source'"]),
    (lambda e: e.update(trained_no="x"), ["unknown field 'trained_no'", "did you mean 'trained_on'"]),
    (lambda e: e["source"]["hub"].update(filenmae="x"), ["source.hub", "did you mean 'filename'"]),
    (lambda e: e.update(sha256="abc"), ["field 'sha256' must be 64 hex digits", "'abc'"]),
    (lambda e: e.update(sha256="unpublised"), ["or 'unpublished' for a URL", "'unpublised'"]),
    (lambda e: e.update(sha256="unpublished", source={"bundled": "w.safetensors"}),
     ["'sha256: unpublished' is only for url and hub sources, not bundled"]),
    (lambda e: e["source"].update(filename="w.pth"), ["source.filename' applies only to url sources"]),
    (lambda e: e.update(source={"url": "https://x.org/dl?id=1", "filename": "a/b"}), ["source.filename", "'a/b'"]),
    (lambda e: e.update(task="predicter"), ["field 'task'", "'predicter'", "did you mean 'predictor'"]),
    (lambda e: e["source"].update(url="https://x.org/w.safetensors"), ["2 sources", "hub, url"]),
    (lambda e: e.update(source={"url": "http://example.org/w.safetensors"}), ["source.url", "https"]),
    (lambda e: e.update(source={"bundled": "/abs/w.safetensors"}), ["source.bundled", "relative"]),
    (lambda e: e.update(metrics=[1]), ["field 'metrics' must be a mapping"]),
    (lambda e: e.update(name="has/slash"), ["field 'name'"]),
])
def test_manifest_validation_names_file_entry_and_field(tmp_path, mutate, expect):
    e = _valid()
    mutate(e)
    m = write_manifest(tmp_path / "bad.yaml", [_valid() | {"name": "first"}, e])
    with pytest.raises(ManifestError) as err:
        load_manifest(m)
    msg = str(err.value)
    assert str(m) in msg and "weights[1]" in msg, msg
    for s in expect:
        assert s.replace("weights[0]", "weights[1]") in msg, (s, msg)


def test_manifest_duplicate_name_names_both_positions(tmp_path):
    m = write_manifest(tmp_path / "dup.yaml", [_valid(), _valid() | {"name": "other"}, _valid()])
    with pytest.raises(ManifestError, match=r"duplicate name 'ok' at weights\[0\] and weights\[2\]") as err:
        load_manifest(m)
    assert str(m) in str(err.value)


@pytest.mark.parametrize("text, expect", [
    ("", "got an empty file"),
    ("version: 1\nweights: [\n", "not valid YAML"),
    ("version: 2\nweights: []\n", "unsupported manifest version 2"),
    ("version: 1\nwieghts: []\n", "did you mean 'weights'"),
    ("version: 1\n", "missing required field 'weights'"),
    ("version: 1\nweights: {a: 1}\n", "'weights' must be a list"),
])
def test_manifest_top_level_errors(tmp_path, text, expect):
    m = tmp_path / "top.yaml"
    m.write_text(text)
    with pytest.raises(ManifestError, match=expect.replace("[", r"\[")) as err:
        load_manifest(m)
    assert str(m) in str(err.value)


def test_bundled_manifest_is_valid_and_typed(tmp_path):
    reg = load_manifests(env=False)
    assert len(reg.manifests) == 1 and reg.manifests[0].name == "weights_manifest.yaml"
    e = load_manifest(write_manifest(tmp_path / "m.yaml", [_valid() | {"config": "cfg/slamp.yaml",
                                                                       "description": "d"}]))[0]
    assert e.source.revision == "a" * 40 and e.config == tmp_path / "cfg" / "slamp.yaml"
    assert e.to_record()["source"] == {"kind": "hub", "repo_id": "org/repo", "revision": "a" * 40,
                                       "filename": "w.safetensors"}
    with pytest.raises(AttributeError):
        e.name = "x"  # frozen


# --- extra manifests ---------------------------------------------------------------------------

def test_env_var_and_extra_manifests_add_entries(weights_env, monkeypatch):
    a = write_manifest(weights_env / "a.yaml", [entry("from-a", {"bundled": "a.bin"}, DATA)])
    b = write_manifest(weights_env / "b.yaml", [entry("from-b", {"bundled": "b.bin"}, DATA)])
    c = write_manifest(weights_env / "c.yaml", [entry("from-c", {"bundled": "c.bin"}, DATA)])
    monkeypatch.setenv("VPCLI_MANIFEST", os.pathsep.join([str(a), "", str(b)]))
    reg = load_manifests([c, a])  # a named twice is read once
    assert reg.names() == ["from-a", "from-b", "from-c"]
    assert reg.get("from-b").source.path == weights_env / "b.bin"
    assert "from-c" in reg and len(reg) == 3


def test_name_defined_in_two_manifests_names_both_files(weights_env, monkeypatch):
    a = write_manifest(weights_env / "a.yaml", [entry("same", {"bundled": "a.bin"}, DATA)])
    b = write_manifest(weights_env / "b.yaml", [entry("x", {"bundled": "x.bin"}, DATA),
                                                entry("same", {"bundled": "b.bin"}, DATA)])
    monkeypatch.setenv("VPCLI_MANIFEST", str(a))
    with pytest.raises(ManifestError) as err:
        load_manifests([b])
    msg = str(err.value)
    assert "'same'" in msg and f"{a} (weights[0])" in msg and f"{b} (weights[1])" in msg


def test_missing_extra_manifest(weights_env):
    with pytest.raises(ManifestError, match="manifest file not found"):
        load_manifests([weights_env / "nope.yaml"])


def test_config_file_is_read_relative_to_manifest(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "slamp.yaml").write_text(yaml.safe_dump({"hidden": 64}))
    e = load_manifest(write_manifest(tmp_path / "m.yaml", [_valid() | {"config": "cfg/slamp.yaml"}]))[0]
    assert e.load_config() == {"hidden": 64}
    assert _valid()["config"] == load_manifest(write_manifest(tmp_path / "n.yaml", [_valid()]))[0].load_config()


def test_the_bundled_manifest_is_valid_and_its_files_verify(tmp_path, monkeypatch):
    """Every entry vpcli ships parses, and every bundled file has the recorded sha256."""
    from vpcli.weights import BUNDLED_MANIFEST, load_manifest, verify_entry
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path))
    entries = load_manifest(BUNDLED_MANIFEST)
    for entry in entries:
        if entry.source.__class__.__name__ == "BundledSource":
            result = verify_entry(entry)
            assert result.status == "ok", result.message
            assert result.path.stat().st_size < 8 * 1024 * 1024  # bundled files stay under 8 MB
