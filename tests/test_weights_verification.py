"""What a first download must match when the publisher gives no sha256 (issue 21): a git blob
SHA-1, a sha256 prefix, a Hub branch pinned to the commit it resolved to; entries that require
others; `vpcli weights download --metrics`; and the refusals (wrong hash, web page, truncated
download), each one line with nothing left in the cache. Files are served by the stand-in on
127.0.0.1 (tests/hub_server.py)."""
from __future__ import annotations

import hashlib
import json
import runpy
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from hub_server import _RESOLVE, StandInHub, entry, hub, sha256, weights_env, write_manifest  # noqa: F401
from test_cli_weights import run
from vpcli.errors import ChecksumError, ManifestError, WeightsError
from vpcli.weights import hashing, load_manifest, load_manifests, locate, recorded_sha256, resolve, resolve_entry
from vpcli.weights import resolve_weights, verify_entry
from vpcli.weights.resolve import first_use_dir, needs_trust

DATA = b"PK\x03\x04 pretend torch zip " + bytes(range(256)) * 8
OTHER = b"PK\x03\x04 another file " + bytes(range(255, -1, -1)) * 8
ROOT = Path(__file__).resolve().parent.parent


def blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def online(hub, weights_env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    return hub


def url_of(hub: StandInHub, data: bytes, path: str = "/files/model.pth") -> str:
    return hub.page(path, data, "application/octet-stream")


def manifest(tmp_path: Path, *entries: dict, name: str = "m.yaml") -> Path:
    return write_manifest(tmp_path / "manifests" / name, list(entries))


def cache_files(tmp_path: Path) -> list[Path]:
    """Every file vpcli or huggingface_hub cached (the sha256 memo aside)."""
    roots = [tmp_path / "vpcli_cache" / "url", tmp_path / "vpcli_cache" / "hub", tmp_path / "hf_home"]
    return sorted(p for r in roots if r.exists() for p in r.rglob("*")
                  if (p.is_file() or p.is_symlink()) and "refs" not in p.parts and p.suffix != ".lock"
                  and p.name != "CACHEDIR.TAG")


def one_line(err: Exception) -> str:
    """The error's text, checked to be one line with a hint (how to fix it)."""
    text = str(err)
    assert "\n" not in text and getattr(err, "hint", None), text
    return text


# --- hashing ---------------------------------------------------------------------------------

def test_git_blob_sha1_is_what_git_hash_object_prints(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(DATA)
    assert hashing.git_blob_sha1(f) == blob_sha1(DATA)
    (tmp_path / "hello").write_bytes(b"hello\n")
    assert hashing.git_blob_sha1(tmp_path / "hello") == "ce013625030ba8dba906f756967f9e9ca394464a"  # git's docs
    if shutil.which("git"):
        out = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout
        assert out.strip() == blob_sha1(DATA)


# --- git_blob_sha1 -----------------------------------------------------------------------------

def test_git_blob_sha1_checks_the_first_download_then_pins_its_sha256(online, tmp_path):
    url = url_of(online, DATA)
    m = manifest(tmp_path, entry("i3d", {"url": url}, sha="unpublished", git_blob_sha1=blob_sha1(DATA).upper()))
    e = load_manifest(m)[0]
    assert e.git_blob_sha1 == blob_sha1(DATA) and e.pinned_by_manifest and not needs_trust(e)
    assert e.verification == "git blob SHA-1" and e.to_record()["git_blob_sha1"] == blob_sha1(DATA)

    # The bytes are fixed by the manifest, so an ordinary load may fetch them (no trust decision).
    first = resolve_weights("i3d", manifests=[m])
    assert first.first_use and first.sha256 == sha256(DATA) and first.path.read_bytes() == DATA
    assert recorded_sha256(e)["sha256"] == sha256(DATA)
    n = online.count()
    again = resolve_weights("i3d", manifests=[m])
    assert again.path == first.path and not again.first_use and online.count() == n
    assert verify_entry(e).status == "ok" and locate(e).status == "cached"

    # Pinned from now on to the sha256 (a changed upstream file is refused like any pinned one).
    first.path.unlink()
    online.page("/files/model.pth", OTHER, "application/octet-stream")
    with pytest.raises(ChecksumError, match="from its first download"):
        resolve("i3d", manifests=[m])


def test_wrong_git_blob_sha1_is_refused_and_nothing_is_kept(online, tmp_path):
    url = url_of(online, OTHER)
    m = manifest(tmp_path, entry("i3d", {"url": url}, sha="unpublished", git_blob_sha1=blob_sha1(DATA)))
    e = load_manifest(m)[0]
    for call in (lambda: resolve("i3d", manifests=[m]), lambda: resolve_entry(e, trust_first_use=True)):
        with pytest.raises(ChecksumError) as err:
            call()
        msg = one_line(err.value)
        assert "git blob SHA-1 mismatch for weights 'i3d'" in msg
        assert blob_sha1(DATA) in msg and blob_sha1(OTHER) in msg and url in msg
        assert "--weights" in err.value.hint and "nothing was kept" in err.value.hint
    assert recorded_sha256(e) is None and cache_files(tmp_path) == []
    assert locate(e).status == "not downloaded"


# --- sha256_prefix -----------------------------------------------------------------------------

def test_sha256_prefix_is_checked_then_the_full_hash_is_pinned(online, tmp_path, capsys):
    prefix = sha256(DATA)[:8]
    url = url_of(online, DATA, f"/models/alexnet-owt-{prefix}.pth")
    m = manifest(tmp_path, entry("alexnet", {"url": url}, sha="unpublished", sha256_prefix=prefix))
    e = load_manifest(m)[0]
    assert e.verification == "sha256 prefix" and not e.pinned_by_manifest and needs_trust(e)
    # 32 bits do not pin a file: only a request fetches it.
    with pytest.raises(WeightsError, match="no published sha256") as err:
        resolve("alexnet", manifests=[m])
    assert "vpcli weights download alexnet" in err.value.hint and online.count() == 0

    code, out, err = run(capsys, "weights", "download", "alexnet", "-m", str(m), "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["sha256"] == sha256(DATA) and rec["first_use"] and rec["verification"] == "sha256 prefix"
    assert f"recorded sha256 {sha256(DATA)} (it starts with {prefix}, as published)" in err
    assert resolve("alexnet", manifests=[m]).read_bytes() == DATA  # pinned: loads without asking


def test_wrong_sha256_prefix_is_refused_and_nothing_is_kept(online, tmp_path, capsys):
    url = url_of(online, OTHER, "/models/vgg16-397923af.pth")
    m = manifest(tmp_path, entry("vgg16", {"url": url}, sha="unpublished", sha256_prefix="397923af"))
    code, out, err = run(capsys, "weights", "download", "vgg16", "-m", str(m))
    assert code == 1 and out == ""
    (line,) = [x for x in err.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: sha256 prefix mismatch for weights 'vgg16'")
    assert "397923af" in line and sha256(OTHER) in line and "(hint: nothing was kept" in line
    assert cache_files(tmp_path) == [] and recorded_sha256(load_manifest(m)[0]) is None


# --- web pages and truncated downloads ---------------------------------------------------------

@pytest.mark.parametrize("body", [b"<!DOCTYPE html><html><body>Quota exceeded</body></html>",
                                  b"\xef\xbb\xbf\n  <html><head><title>Sign in</title></head></html>",
                                  b"<HTML>404</HTML>"])
@pytest.mark.parametrize("check", ["git_blob_sha1", "sha256_prefix", "published"])
def test_a_web_page_served_as_a_file_is_refused(online, tmp_path, body, check):
    url = url_of(online, body, "/files/model.pth")  # application/octet-stream: only the bytes tell
    fields = {"published": {"sha": sha256(body)}, "git_blob_sha1": {"sha": "unpublished", "git_blob_sha1": blob_sha1(body)},
              "sha256_prefix": {"sha": "unpublished", "sha256_prefix": sha256(body)[:8]}}[check]
    m = manifest(tmp_path, entry("net", {"url": url}, **fields))
    e = load_manifest(m)[0]
    with pytest.raises(WeightsError) as err:
        resolve_entry(e, trust_first_use=True)
    msg = one_line(err.value)
    assert "answered with a web page" in msg and "'net'" in msg and "--weights /path/to/model.pth" in err.value.hint
    assert not isinstance(err.value, ChecksumError)
    assert cache_files(tmp_path) == [] and recorded_sha256(e) is None


def test_html_content_type_and_truncated_download_are_refused(online, tmp_path):
    page = online.page("/drive/model.pth", DATA)  # text/html, even with the right bytes
    cut = online.page("/cut/model.pth", DATA[:100], "application/octet-stream", claimed_length=len(DATA))
    for name, url in (("page", page), ("cut", cut)):
        for fields in ({"git_blob_sha1": blob_sha1(DATA)}, {"sha256_prefix": sha256(DATA)[:10]}):
            m = manifest(tmp_path, entry(name, {"url": url}, sha="unpublished", **fields), name=f"{name}.yaml")
            e = load_manifest(m)[0]
            with pytest.raises(WeightsError) as err:
                resolve_entry(e, trust_first_use=True)
            msg = one_line(err.value)
            assert ("web page (text/html)" if name == "page" else f"ended after 100 of {len(DATA)} bytes") in msg
            assert recorded_sha256(e) is None and cache_files(tmp_path) == []


# --- the Hub on a branch -----------------------------------------------------------------------

def with_branches(hub: StandInHub) -> dict:
    """Make the stand-in answer ``/{repo}/resolve/{branch}/...`` like the Hub: with the branch's
    current commit (``X-Repo-Commit``) and that commit's file. Returns {(repo, branch): commit}."""
    branches: dict[tuple[str, str], str] = {}
    base = hub._server.RequestHandlerClass

    class Branching(base):
        def _serve(self, body: bool) -> None:
            m = _RESOLVE.match(urlsplit(self.path).path)
            if m and (unquote(m["repo"]), unquote(m["rev"])) in branches:
                self.path = f"/{m['repo']}/resolve/{branches[unquote(m['repo']), unquote(m['rev'])]}/{m['file']}"
            super()._serve(body)

    hub._server.RequestHandlerClass = Branching
    return branches


def hub_requests(hub: StandInHub, method: str = "GET") -> list[str]:
    return [p for m, p in hub.requests if m == method and "/resolve/" in p]


def test_hub_branch_is_pinned_to_the_commit_of_the_first_download(online, tmp_path, capsys, monkeypatch):
    branches = with_branches(online)
    repo = "flateon/FVD-I3D-torchscript"
    commit_a = online.add(repo, "i3d_torchscript.pt", DATA)
    branches[repo, "main"] = commit_a
    source = {"hub": {"repo_id": repo, "revision": "main", "filename": "i3d_torchscript.pt"}}
    m = manifest(tmp_path, entry("i3d", source, sha="unpublished"))
    e = load_manifest(m)[0]
    assert not e.source.is_commit and e.records_first_use and needs_trust(e)
    assert e.verification == "pinned on first use"
    with pytest.raises(WeightsError, match="no published sha256") as err:
        resolve("i3d", manifests=[m])
    assert "vpcli weights download i3d" in err.value.hint and online.count() == 0

    code, out, err = run(capsys, "weights", "download", "i3d", "-m", str(m), "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["commit"] == commit_a and rec["sha256"] == sha256(DATA) and rec["first_use"]
    assert f"revision main of {repo} is commit {commit_a}; vpcli uses that commit from now on" in err
    record = recorded_sha256(e)
    assert record["commit"] == commit_a and record["revision"] == "main" and record["sha256"] == sha256(DATA)
    assert first_use_dir(e).parent == tmp_path / "vpcli_cache" / "hub" / "first-use"

    # The branch moves on to a commit with other bytes: vpcli keeps the pinned commit.
    commit_b = online.add(repo, "i3d_torchscript.pt", OTHER)
    branches[repo, "main"] = commit_b
    n = online.count()
    got = resolve_weights("i3d", manifests=[m])
    assert got.path.read_bytes() == DATA and got.commit == commit_a and online.count() == n  # from the cache
    assert locate(e).status == "cached" and verify_entry(e).status == "ok"
    code, out, _ = run(capsys, "weights", "info", "i3d", "-m", str(m))
    assert f"commit       {commit_a} (revision main at the first download" in out
    assert "verified     pinned on first use" in out

    # With the Hub cache gone, the file is fetched again at the pinned commit, never at main.
    shutil.rmtree(tmp_path / "hf_home")
    hashing.clear_memory()
    before = len(online.requests)
    again = resolve_weights("i3d", manifests=[m])
    assert again.path.read_bytes() == DATA and f"/{commit_a}/" in str(again.path)
    assert all(f"/resolve/{commit_a}/" in p for m_, p in online.requests[before:] if "/resolve/" in p)

    # Offline, the pinned commit still resolves from the cache.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("i3d", manifests=[m]) == again.path
    monkeypatch.delenv("HF_HUB_OFFLINE")

    # A record without its commit is damaged, not absent: nothing re-resolves the branch over it.
    record_file = first_use_dir(e) / "sha256.json"
    record_file.write_text(json.dumps({"sha256": sha256(DATA)}))
    assert locate(e).status == "damaged first-use record"
    with pytest.raises(WeightsError, match="first-use record of weights 'i3d'.* is damaged") as err:
        resolve_entry(e, trust_first_use=True)
    assert str(first_use_dir(e)) in err.value.hint


def test_hub_branch_with_a_git_blob_sha1_or_published_sha256(online, tmp_path):
    branches = with_branches(online)
    repo = "org/metrics"
    branches[repo, "main"] = online.add(repo, "net.pt", DATA)
    src = {"hub": {"repo_id": repo, "revision": "main", "filename": "net.pt"}}
    good = entry("good", src, sha="unpublished", git_blob_sha1=blob_sha1(DATA))
    published = entry("published", src, DATA)
    wrong = entry("wrong", src, sha="unpublished", git_blob_sha1=blob_sha1(OTHER))
    wrong_sha = entry("wrong-sha", src, sha=sha256(OTHER))
    m = manifest(tmp_path, good, published, wrong, wrong_sha)
    reg = load_manifests([m])
    # Bytes fixed by the manifest: an ordinary resolve fetches and records the commit.
    for name in ("good", "published"):
        got = resolve_weights(name, manifests=reg)
        assert got.first_use and got.commit == branches[repo, "main"] and got.path.read_bytes() == DATA
        assert recorded_sha256(reg.get(name))["commit"] == got.commit
    assert reg.get("published").verification == "published sha256"
    shutil.rmtree(tmp_path / "hf_home")  # so that the refused downloads find nothing cached
    for name, what in (("wrong", "git blob SHA-1 mismatch"), ("wrong-sha", "sha256 mismatch")):
        with pytest.raises(ChecksumError, match=what) as err:
            resolve(name, manifests=reg)
        one_line(err.value)
        assert recorded_sha256(reg.get(name)) is None
    assert [p for p in cache_files(tmp_path) if "hf_home" in p.parts] == []  # the refused file is gone


def test_a_branch_that_resolves_to_no_commit_is_refused(online, tmp_path):
    online.add("org/odd", "net.pt", DATA, revision="main")  # answers X-Repo-Commit: main
    m = manifest(tmp_path, entry("odd", {"hub": {"repo_id": "org/odd", "revision": "main", "filename": "net.pt"}},
                                 sha="unpublished"))
    with pytest.raises(WeightsError, match="to 'main', not a 40-hex commit") as err:
        resolve_entry(load_manifest(m)[0], trust_first_use=True)
    one_line(err.value)


# --- requires ----------------------------------------------------------------------------------

def lpips_like(hub: StandInHub) -> list[dict]:
    """An LPIPS-style pair: a head (published sha256) on a torchvision-style backbone (prefix only)."""
    prefix = sha256(OTHER)[:8]
    backbone = entry("alexnet-tv", {"url": url_of(hub, OTHER, f"/models/alexnet-owt-{prefix}.pth")},
                     sha="unpublished", sha256_prefix=prefix, task="metric", arch="alexnet")
    head = entry("lpips-alex", {"url": url_of(hub, DATA, "/lpips/v0.1/alex.pth")}, DATA, task="metric",
                 arch="lpips", requires=["alexnet-tv"])
    return [backbone, head]


def test_requires_resolves_every_part(online, tmp_path, capsys):
    m = manifest(tmp_path, *lpips_like(online))
    reg = load_manifests([m])
    assert reg.get("lpips-alex").requires == ("alexnet-tv",)
    # Loading the head needs its backbone; the backbone is fetched only on request, and the error says how.
    with pytest.raises(WeightsError, match="'alexnet-tv' have no published sha256") as err:
        resolve("lpips-alex", manifests=[m])
    assert "vpcli weights download alexnet-tv" in err.value.hint

    code, out, err = run(capsys, "weights", "download", "lpips-alex", "-m", str(m), "--json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["name"] for r in records] == ["alexnet-tv", "lpips-alex"] and all(r["ok"] for r in records)
    assert records[1]["requires"] == ["alexnet-tv"] and records[0]["first_use"]

    got = resolve_weights("lpips-alex", manifests=[m])
    assert got.path.read_bytes() == DATA and got.requirement("alexnet-tv").path.read_bytes() == OTHER
    assert got.requirement("alexnet-tv").sha256 == sha256(OTHER)
    with pytest.raises(KeyError):
        got.requirement("nothing")
    # resolve_entry without a registry reads the entry's own manifest to find its requirements.
    assert resolve_entry(reg.get("lpips-alex")).requires[0].name == "alexnet-tv"


def test_requirements_come_first_each_once(weights_env):
    def e(name, *req):
        return entry(name, {"bundled": f"{name}.bin"}, b"x", requires=list(req) or None)
    m = manifest(weights_env, *[x for x in (e("a", "b", "c"), e("b", "c", "d"), e("c", "d"), e("d"))])
    reg = load_manifests([m])
    assert [r.name for r in reg.requirements(reg.get("a"))] == ["d", "c", "b"]
    assert reg.requirements(reg.get("d")) == []


@pytest.mark.parametrize("entries, expect", [
    ([{"requires": ["ghost"]}], "'a': field 'requires' names unknown weights 'ghost'"),
    ([{"requires": ["b"]}, {"name": "b", "requires": ["a"]}], "field 'requires' makes a cycle: a -> b -> a"),
    ([{"requires": ["a"]}], "field 'requires' names the entry itself"),
    ([{"requires": "b"}], "field 'requires' must be a list of weights names"),
    ([{"requires": ["b", "b"]}, {"name": "b"}], "names 'b' twice"),
    ([{"git_blob_sha1": "abc"}], "field 'git_blob_sha1' must be 40 hex digits"),
    ([{"sha256_prefix": "397923a"}], "field 'sha256_prefix' must be 8 to 63 hex digits"),
    ([{"sha256_prefix": "z" * 8}], "field 'sha256_prefix' must be 8 to 63 hex digits"),
    ([{"sha256": "0" * 64, "git_blob_sha1": "0" * 40}], "'git_blob_sha1' is only for entries with 'sha256: unpublished'"),
    ([{"sha256": "0" * 64, "sha256_prefix": "0" * 8}], "'sha256_prefix' is only for entries with"),
    ([{"sha256_prefx": "0" * 8}], "did you mean 'sha256_prefix'"),
    ([{"source": {"hub": {"repo_id": "o/r", "revision": "feature/x..y", "filename": "w.pt"}}}], "branch or tag"),
])
def test_manifest_checks_for_the_new_fields(weights_env, entries, expect):
    items = [entry(f.pop("name", "a"), f.pop("source", {"url": "https://example.org/w.pt"}),
                   sha=f.pop("sha256", "unpublished"), **f) for f in entries]
    m = manifest(weights_env, *items)
    with pytest.raises(ManifestError) as err:
        load_manifests([m])
    assert expect in str(err.value) and str(m) in str(err.value), str(err.value)


def test_a_hub_branch_or_tag_and_an_unpublished_hub_file_are_valid(weights_env):
    items = [entry(n, {"hub": {"repo_id": "o/r", "revision": rev, "filename": "w.pt"}}, sha=sha)
             for n, rev, sha in (("a", "main", "unpublished"), ("b", "v1.0", "0" * 64), ("c", "release/2024", "0" * 64),
                                 ("d", "f" * 40, "unpublished"))]
    reg = load_manifests([manifest(weights_env, *items)])
    assert [reg.get(n).source.is_commit for n in "abcd"] == [False, False, False, True]
    assert [reg.get(n).records_first_use for n in "abcd"] == [True, True, True, True]
    assert reg.get("b").verification == "published sha256" and reg.get("d").verification == "pinned on first use"


# --- download --metrics / --all ----------------------------------------------------------------

def test_download_metrics_fetches_every_metric_network_and_what_it_requires(online, tmp_path, capsys):
    helper = entry("vgg-features", {"url": url_of(online, OTHER[::-1], "/m/vgg.pth")}, OTHER[::-1], task="flow")
    csim = entry("csim-head", {"url": url_of(online, DATA[::-1], "/m/csim.pth")}, DATA[::-1], task="metric",
                 requires=["vgg-features"])
    unrelated = entry("predictor", {"url": url_of(online, b"x" * 50, "/m/p.pth")}, b"x" * 50)
    i3d = entry("i3d", {"url": url_of(online, DATA * 2, "/m/i3d.pt")}, sha="unpublished", task="metric",
                git_blob_sha1=blob_sha1(DATA * 2))
    mirror = entry("i3d-mirror", {"url": url_of(online, DATA * 2, "/mirror/i3d.pt")}, sha="unpublished",
                   task="metric", git_blob_sha1=blob_sha1(DATA * 2))
    m = manifest(tmp_path, *lpips_like(online), helper, csim, unrelated, i3d, mirror)
    code, out, err = run(capsys, "weights", "download", "--metrics", "-m", str(m), "--json")
    assert code == 0, err
    names = [json.loads(line)["name"] for line in out.splitlines()]
    assert names == ["alexnet-tv", "lpips-alex", "vgg-features", "csim-head", "i3d"]  # requirements first, once
    assert ("GET", "/m/p.pth") not in online.requests and ("GET", "/mirror/i3d.pt") not in online.requests
    assert "skipped i3d-mirror: the same file as i3d (same git blob SHA-1)" in err

    empty = manifest(tmp_path, unrelated, name="none.yaml")
    code, out, err = run(capsys, "weights", "download", "--metrics", "-m", str(empty))
    assert code == 0 and out == "" and "no metric weights defined" in err
    code, _, err = run(capsys, "weights", "download", "--metrics", "--all", "-m", str(empty))
    assert code == 2 and "one of them" in err


def test_download_all_skips_what_needs_a_trust_decision_also_through_requires(online, tmp_path, capsys):
    m = manifest(tmp_path, *lpips_like(online),
                 entry("i3d", {"url": url_of(online, DATA * 2, "/i3d.pt")}, sha="unpublished",
                       git_blob_sha1=blob_sha1(DATA * 2)))
    code, out, err = run(capsys, "weights", "download", "--all", "-m", str(m), "--json")
    assert code == 0, err
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["i3d"]  # a git blob SHA-1 fixes the bytes
    assert "skipped alexnet-tv: its publisher gives no sha256" in err
    assert "skipped lpips-alex: it requires weights without a published sha256" in err


# --- list, info, and the README table ----------------------------------------------------------

def test_list_and_info_say_how_each_entry_is_verified(online, tmp_path, capsys):
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "b.bin").write_bytes(b"bundled")
    m = manifest(tmp_path, *lpips_like(online),
                 entry("i3d", {"url": url_of(online, DATA, "/i3d.pt")}, sha="unpublished", git_blob_sha1=blob_sha1(DATA)),
                 entry("tofu", {"url": url_of(online, DATA, "/tofu.pt")}, sha="unpublished"),
                 entry("local", {"bundled": "b.bin"}, b"bundled"))
    code, out, _ = run(capsys, "weights", "list", "-m", str(m), "--json")
    got = {r["name"]: r["verification"] for r in map(json.loads, out.splitlines())}
    assert got == {"alexnet-tv": "sha256 prefix", "lpips-alex": "published sha256", "i3d": "git blob SHA-1",
                   "tofu": "pinned on first use", "local": "bundled"}
    code, out, _ = run(capsys, "weights", "list", "-m", str(m))
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert rows["i3d"].rstrip().endswith("git blob SHA-1") and rows["tofu"].rstrip().endswith("pinned on first use")

    code, out, _ = run(capsys, "weights", "info", "lpips-alex", "-m", str(m))
    assert code == 0 and "verified     published sha256" in out and "requires     alexnet-tv" in out
    code, out, _ = run(capsys, "weights", "info", "alexnet-tv", "-m", str(m))
    assert f"sha256_prefix  {sha256(OTHER)[:8]}" in out and "verified       sha256 prefix" in out


def test_weights_table_script_covers_every_bundled_entry(capsys, weights_env, monkeypatch):
    monkeypatch.setattr("sys.argv", ["weights_table.py"])
    from vpcli.weights import manifest as manifest_mod
    monkeypatch.setattr(manifest_mod, "BUNDLED_MANIFEST", ROOT / "weights_manifest.yaml")
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "scripts" / "weights_table.py"), run_name="__main__")
    assert done.value.code == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    names = [e.name for e in load_manifests(env=False)]
    assert lines[0].startswith("| name |") and "verified by" in lines[0] and set(lines[1]) <= set("|- :")
    assert len(lines) == 2 + len(names)
    for name, line in zip(names, lines[2:]):
        assert line.startswith(f"| `{name}` |") and line.count("|") == lines[0].count("|")


def test_readme_weights_table_is_current():
    """README's table of every entry is what scripts/weights_table.py prints (regenerate it)."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    table = readme.split("<!-- weights-table -->\n", 1)[1].split("\n<!-- /weights-table -->", 1)[0]
    out = subprocess.run([sys.executable, str(root / "scripts" / "weights_table.py")], capture_output=True,
                         text=True, check=True, cwd=root).stdout.strip()
    assert table.strip() == out, "README's weights table is stale: python scripts/weights_table.py"


def test_works_on_is_checked_and_every_bundled_predictor_says_it(tmp_path):
    from vpcli.errors import ManifestError
    from vpcli.weights import load_manifests
    from vpcli.weights.manifest import WORKS_ON
    reg = load_manifests()
    for e in reg:
        if e.task in ("predictor", "segmenter", "flow"):
            assert e.works_on and set(e.works_on) <= set(WORKS_ON), e.name
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nweights:\n- name: x\n  task: flow\n  arch: pwcnet\n  config: {}\n"
                   "  source: {bundled: x.safetensors}\n  sha256: '" + "0" * 64 + "'\n  license: MIT\n"
                   "  trained_on: t\n  metrics: {}\n  works_on: [mars]\n")
    with pytest.raises(ManifestError, match="field 'works_on' must be a list of digits, synthetic-streets"):
        load_manifests([bad])
