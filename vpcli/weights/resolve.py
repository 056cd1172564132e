"""Turn a weights name (or a path) into a verified local file.

Order (DESIGN.md, "Weights"): an explicit path; else the manifest entry's source — a bundled file
next to its manifest, a Hugging Face Hub file (through ``huggingface_hub``'s cache), or a pinned
URL (our own cache) — else a one-line error saying how to get the file. Every file that comes
from a manifest entry has its sha256 checked here, whatever its source; a cached file that fails
the check is deleted so that it is never used again.

Environment, read at call time (``huggingface_hub`` reads its own constants once, at import, so
we pass ``cache_dir``/``endpoint``/``local_files_only`` explicitly):

- ``HF_HOME`` / ``HF_HUB_CACHE``: where Hub files are cached.
- ``HF_ENDPOINT``: the Hub to talk to (a mirror, or the stand-in Hub in tests).
- ``HF_HUB_OFFLINE``: never touch the network; only cached files resolve (also for URL sources).
- ``VPCLI_CACHE``: our cache (URL downloads, the sha256 memo); default ``~/.cache/vpcli``.

Trust on first use: a url entry with ``sha256: unpublished`` (its publisher gives no hash) is
downloaded only when asked (``trust_first_use=True``, which `vpcli weights download` passes).
That first download's sha256 is recorded in ``<VPCLI_CACHE>/url/first-use/<name>-<url hash>/``
and from then on the entry is pinned to it like any other: a changed file is refused, a
re-download must match. Changing the URL starts a new record.

What the publisher does give is checked before that record is written (manifest.py): a git blob
SHA-1 (``git_blob_sha1``; such an entry needs no request, its bytes are fixed) or a sha256 prefix
(``sha256_prefix``). A hub entry that names a branch (``revision: main``) records the commit its
first download resolved to, under ``<VPCLI_CACHE>/hub/first-use/<name>-<source hash>/``, and every
later resolve uses that commit. Entries an entry ``requires`` are resolved with it. Every first
download is refused, and nothing of it kept, when it is a web page (by Content-Type or by its
first bytes), shorter than its Content-Length, or does not match what the manifest gives.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vpcli.errors import ChecksumError, WeightsError
from vpcli.weights import hashing
from vpcli.weights.manifest import (
    UNPUBLISHED,
    BundledSource,
    HubSource,
    UrlSource,
    WeightsEntry,
    WeightsRegistry,
    load_manifests,
)

DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_TIMEOUT_S = 10
URL_TIMEOUT_S = 60
_TRUE = {"1", "ON", "YES", "TRUE"}

# Called with (bytes done, total bytes or None) while a file downloads; the CLI draws a bar.
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class ResolvedWeights:
    """A local weights file and what it is (for ``meta.json``: name and sha256)."""

    path: Path
    name: str | None  # manifest entry, or None for an explicit path
    sha256: str | None  # None only for an explicit folder
    source: str  # "path" | "bundled" | "hub" | "url"
    first_use: bool = False  # this call downloaded an `unpublished` entry and recorded its sha256
    requires: tuple["ResolvedWeights", ...] = ()  # the entry's `requires`, resolved (see requirement())
    commit: str | None = None  # a hub file's commit (the recorded one for a branch revision)

    def requirement(self, name: str) -> "ResolvedWeights":
        """The resolved required entry ``name`` (direct or indirect)."""
        for req in self.requires:
            if req.name == name:
                return req
        raise KeyError(f"weights '{self.name}' do not require '{name}'")


@dataclass(frozen=True)
class Location:
    """Where an entry's file is right now, without network or hashing."""

    status: str  # "bundled" | "cached" | "not downloaded" | "missing" (a bundled file that is absent)
    #              | "damaged first-use record" (an unpublished entry whose recorded sha256 cannot be read)
    path: Path | None


@dataclass(frozen=True)
class VerifyResult:
    name: str
    status: str  # "ok" | "mismatch" | "missing"
    path: Path | None
    expected: str  # the sha256, or "unpublished" before a first download has recorded one
    actual: str | None = None
    message: str | None = None


# --- environment -----------------------------------------------------------------------------

def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hf_cache_dir() -> Path:
    """The Hub cache folder the way huggingface_hub computes it, but from the current environment."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def url_cache_path(entry: WeightsEntry) -> Path:
    """``<VPCLI_CACHE>/url/<sha256>/<filename>``: content-addressed, so a new pin never collides.

    An ``unpublished`` entry lives in its first-use folder (see :func:`first_use_dir`) instead.
    """
    assert isinstance(entry.source, UrlSource)
    # An unpublished entry's file sits in a subfolder, so that no file name can clash with its record.
    folder = first_use_dir(entry) / "file" if entry.sha256 is None else hashing.vpcli_cache_dir() / "url" / entry.sha256
    return folder / entry.source.filename


def first_use_dir(entry: WeightsEntry) -> Path:
    """Where an ``unpublished`` entry's file and its recorded sha256 live: one folder per name and URL
    (a hub entry's folder, one per name and repo/revision/filename, holds only the record)."""
    src = entry.source
    if isinstance(src, HubSource):
        tag = hashlib.sha256(f"{src.repo_id}@{src.revision}/{src.filename}".encode()).hexdigest()[:12]
        return hashing.vpcli_cache_dir() / "hub" / "first-use" / f"{entry.name}-{tag}"
    assert isinstance(src, UrlSource)
    tag = hashlib.sha256(src.url.encode()).hexdigest()[:12]
    return hashing.vpcli_cache_dir() / "url" / "first-use" / f"{entry.name}-{tag}"


def recorded_sha256(entry: WeightsEntry) -> dict | None:
    """The record of an entry's first download (sha256, source, when; a hub branch's commit), or None
    for entries that keep none (a published sha256 and, on the Hub, a commit revision)."""
    if not entry.records_first_use or isinstance(entry.source, BundledSource):
        return None
    path = first_use_dir(entry) / RECORD
    if not path.exists():
        return None
    # A record that cannot be read must not count as absent: that would re-record whatever the
    # server serves next.
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = None
    sha = record.get("sha256") if isinstance(record, dict) else None
    commit_ok = (not isinstance(entry.source, HubSource) or entry.source.is_commit
                 or (isinstance(record, dict) and isinstance(record.get("commit"), str)
                     and _COMMIT_RE.fullmatch(record["commit"]) is not None))
    if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha) or not commit_ok:
        raise WeightsError(f"the first-use record of weights '{entry.name}' ({path}) is damaged",
                           f"delete {first_use_dir(entry)} and run `vpcli weights download {entry.name}` to record "
                           f"the hash anew")
    return record


def expected_sha256(entry: WeightsEntry) -> str | None:
    """The hash the entry's file must have: the manifest's, else the first download's (None: neither)."""
    if entry.sha256 is not None:
        return entry.sha256
    record = recorded_sha256(entry)
    return record["sha256"] if record else None


def needs_trust(entry: WeightsEntry) -> bool:
    """Whether fetching the entry is a decision about trust that only a request makes
    (``trust_first_use``): nothing records its sha256 yet and the manifest does not fix its bytes
    (no sha256, no git blob SHA-1; a sha256 prefix is too short to)."""
    return (not isinstance(entry.source, BundledSource) and not entry.pinned_by_manifest
            and expected_sha256(entry) is None)


def pinned_revision(entry: WeightsEntry) -> str | None:
    """The commit a hub entry's file is fetched at: its revision when that is a commit, else the
    commit recorded at its first download (None: not downloaded yet)."""
    src = entry.source
    if not isinstance(src, HubSource):
        return None
    if src.is_commit:
        return src.revision
    record = recorded_sha256(entry)
    return record["commit"] if record else None


RECORD = "sha256.json"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<?xml")  # no weights file starts like this


# --- public API ------------------------------------------------------------------------------

def resolve(name_or_path: str | os.PathLike, *,
            manifests: WeightsRegistry | Iterable[str | os.PathLike] | None = None,
            download: bool = True, progress: Progress | None = None) -> Path:
    """The local path of verified weights; see :func:`resolve_weights`."""
    return resolve_weights(name_or_path, manifests=manifests, download=download, progress=progress).path


def resolve_weights(name_or_path: str | os.PathLike, *,
                    manifests: WeightsRegistry | Iterable[str | os.PathLike] | None = None,
                    download: bool = True, progress: Progress | None = None) -> ResolvedWeights:
    """Resolve a manifest name or a path.

    A ``Path``, or a string with a path separator or a leading ``~``, is a path: used as is (a
    user's own file is trusted; there is no manifest hash to compare with). A bare word is a
    manifest name first and an existing file in the current folder second — so an output folder
    that happens to share a weights name never shadows the entry. ``manifests`` is a registry, or
    extra manifest files to read after the bundled one and ``$VPCLI_MANIFEST``. ``download=False``
    uses only files already on disk.
    """
    explicit = _as_explicit_path(name_or_path)
    if explicit is not None:
        return _explicit(explicit)
    name = str(name_or_path)
    if isinstance(manifests, (str, os.PathLike)):  # one extra manifest, not an iterable of characters
        manifests = [manifests]
    registry = manifests if isinstance(manifests, WeightsRegistry) else load_manifests(manifests or ())
    if name not in registry and Path(name).exists():
        return _explicit(Path(name))
    return resolve_entry(registry.get(name), download=download, progress=progress, registry=registry)


def resolve_entry(entry: WeightsEntry, *, download: bool = True, progress: Progress | None = None,
                  trust_first_use: bool = False, registry: WeightsRegistry | None = None,
                  _requirements: bool = True) -> ResolvedWeights:
    """Find or fetch the entry's file, then check its sha256 (deleting a bad cached copy).

    ``trust_first_use``: an ``unpublished`` entry with no recorded hash may be downloaded, and the
    sha256 of what arrives is recorded (``first_use`` is then True on the result). Without it such
    an entry raises a WeightsError that says to run `vpcli weights download NAME`.

    The entries it ``requires`` (directly or through others) are resolved first, each once, with
    the same settings but no progress (``requires`` on the result); ``registry`` is where their
    names are looked up (default: the manifests read with the entry's own). To show each one's
    progress, resolve ``registry.requirements(entry)`` first, as `vpcli weights download` does.
    """
    requires: tuple[ResolvedWeights, ...] = ()
    if entry.requires and _requirements:
        reg = registry if registry is not None and entry.name in registry else load_manifests([entry.manifest])
        requires = tuple(resolve_entry(req, download=download, trust_first_use=trust_first_use, registry=reg,
                                       _requirements=False)
                         for req in reg.requirements(entry))
    src = entry.source
    first_use = False
    commit = None
    if needs_trust(entry) and not trust_first_use:
        raise WeightsError(f"weights '{entry.name}' have no published sha256, so vpcli fetches them only "
                           f"when asked", how_to_get(entry))
    if isinstance(src, BundledSource):
        if not src.path.is_file():
            raise WeightsError(f"bundled weights file for '{entry.name}' is missing: {src.path}",
                               how_to_get(entry))
        path = src.path
    elif isinstance(src, HubSource):
        path, first_use, commit = _from_hub(entry, src, download=download, progress=progress)
    else:
        path, first_use = _from_url(entry, src, download=download, progress=progress)
    sha = check_sha256(entry, path)
    if entry.convert:  # a publisher's format, converted once into cached safetensors (sha256: the original's)
        from vpcli.weights.convert_on_download import converted_path
        path = converted_path(entry, path, sha)
    return ResolvedWeights(path=path, name=entry.name, sha256=sha, source=src.kind, first_use=first_use,
                           requires=requires, commit=commit)


def check_sha256(entry: WeightsEntry, path: Path, *, trust_cache: bool = True) -> str:
    """Raise ChecksumError (after deleting a cached copy) unless ``path`` has the entry's hash
    (for an ``unpublished`` entry: the hash recorded at its first download)."""
    expected = expected_sha256(entry)
    if expected is None:  # nothing to compare with: never "mismatch" (which deletes the file)
        raise WeightsError(f"weights '{entry.name}' have no published sha256 and no first download recorded one",
                           how_to_get(entry))
    actual = hashing.file_sha256(path, trust_cache=trust_cache)
    if actual != expected:
        raise _mismatch(entry, path, actual)
    return actual


def _mismatch(entry: WeightsEntry, path: Path, actual: str) -> ChecksumError:
    removed = _discard(entry, path)
    expected = expected_sha256(entry)
    if entry.sha256 is None:
        what = f"the sha256 recorded at its first download ({first_use_dir(entry) / RECORD}), {expected}"
        hint = ((f"the changed copy was deleted; run `vpcli weights download {entry.name}` to fetch it again"
                 if removed else "restore the file")
                + f"; if the publisher replaced the file on purpose, delete {first_use_dir(entry)} to record anew")
    else:
        what = expected
        if removed:
            hint = f"the bad copy was deleted; run `vpcli weights download {entry.name}` to fetch it again"
        elif isinstance(entry.source, BundledSource):
            hint = "the installed file is damaged or the manifest is out of date; reinstall vpcli or fix the manifest"
        else:
            hint = "delete the file and download it again"
    return ChecksumError(f"sha256 mismatch for weights '{entry.name}' ({path}): expected {what}, got {actual}",
                         hint)


def locate(entry: WeightsEntry) -> Location:
    """Where the entry's file is now (no download, no hashing): for `vpcli weights list`."""
    src = entry.source
    if isinstance(src, BundledSource):
        return Location("bundled", src.path) if src.path.is_file() else Location("missing", None)
    if isinstance(src, HubSource):
        try:  # a branch counts as downloaded only once its commit is recorded (and so is the sha256)
            commit = pinned_revision(entry) if expected_sha256(entry) is not None else None
        except WeightsError:
            return Location("damaged first-use record", None)
        cached = _hf_cached(dataclasses.replace(src, revision=commit)) if commit else None
        return Location("cached", cached) if cached else Location("not downloaded", None)
    dest = url_cache_path(entry)
    try:
        pinned = expected_sha256(entry) is not None
    except WeightsError:
        return Location("damaged first-use record", None)
    return Location("cached", dest) if dest.is_file() and pinned else Location("not downloaded", None)


def verify_entry(entry: WeightsEntry) -> VerifyResult:
    """Re-hash the entry's local file (every byte, ignoring the memo) without downloading."""
    loc = locate(entry)
    try:
        expected = expected_sha256(entry)
    except WeightsError as err:
        return VerifyResult(entry.name, "mismatch", None, UNPUBLISHED, message=str(err))
    if loc.path is None or expected is None:  # a file without a first-use record is not vpcli's download
        return VerifyResult(entry.name, "missing", None, expected or UNPUBLISHED,
                            message=f"{loc.status} ({how_to_get(entry)})")
    actual = hashing.file_sha256(loc.path, trust_cache=False)
    if actual != expected:
        err = _mismatch(entry, loc.path, actual)
        return VerifyResult(entry.name, "mismatch", loc.path, expected, actual, str(err))
    return VerifyResult(entry.name, "ok", loc.path, expected, actual)


def how_to_get(entry: WeightsEntry) -> str:
    """The one-line hint every 'cannot resolve' error carries."""
    src = entry.source
    if isinstance(src, BundledSource):
        return (f"the file ships with its manifest ({entry.manifest}); reinstall vpcli or restore it, "
                f"or pass --weights /path/to/{src.filename}")
    offline = " (unset HF_HUB_OFFLINE)" if is_offline() else ""
    if isinstance(src, HubSource):
        at = pinned_revision(entry) or src.revision
        if needs_trust(entry):
            return (f"run `vpcli weights download {entry.name}` once while online{offline}: its publisher gives no "
                    f"sha256, so vpcli records the first download's and checks every later load against it; or "
                    f"download {src.filename} from {src.repo_id} at {at} yourself and pass --weights "
                    f"/path/to/{src.filename}")
        return (f"run `vpcli weights download {entry.name}` while online{offline}, or download "
                f"{src.filename} from {src.repo_id} at {at[:12]} and pass --weights /path/to/{src.filename}")
    if needs_trust(entry):
        return (f"run `vpcli weights download {entry.name}` once while online{offline}: its publisher gives no "
                f"sha256, so vpcli records the first download's and checks every later load against it; "
                f"or fetch {src.url} yourself and pass --weights /path/to/{src.filename}")
    if expected_sha256(entry) is None:  # a git blob SHA-1 to check first: a placed file would not count
        return (f"run `vpcli weights download {entry.name}` while online{offline}, or fetch {src.url} and "
                f"pass --weights /path/to/{src.filename}")
    return (f"run `vpcli weights download {entry.name}` while online{offline}, or fetch {src.url} and place it "
            f"at {url_cache_path(entry)}, or pass --weights /path/to/{src.filename}")


# --- explicit paths --------------------------------------------------------------------------

def _as_explicit_path(value: str | os.PathLike) -> Path | None:
    if isinstance(value, os.PathLike):
        return Path(value).expanduser()
    seps = [s for s in (os.sep, os.altsep, "/") if s]
    if value.startswith("~") or any(s in value for s in seps):
        return Path(value).expanduser()
    return None


def _explicit(path: Path) -> ResolvedWeights:
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}",
                           "check the path, or give a manifest name (see `vpcli weights list`)")
    # A checkpoint folder (config + weights) is accepted too; it has no single hash.
    digest = hashing.file_sha256(path) if path.is_file() else None
    return ResolvedWeights(path=path, name=None, sha256=digest, source="path")


# --- Hugging Face Hub ------------------------------------------------------------------------

def _hf_cached(src: HubSource) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(src.repo_id, src.filename, cache_dir=str(hf_cache_dir()),
                                   revision=src.revision)
    return Path(found) if isinstance(found, str) else None


def _from_hub(entry: WeightsEntry, src: HubSource, *, download: bool,
              progress: Progress | None) -> tuple[Path, bool, str]:
    """(the cached file, whether this call recorded a first download, the commit the file is at).

    A branch revision is resolved to its commit once, at the first download, which records it;
    every later call uses the recorded commit (also after the branch moves on)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    endpoint = hf_endpoint()
    local_only = not download or is_offline()
    first = entry.records_first_use and recorded_sha256(entry) is None
    commit = pinned_revision(entry)  # None: a branch that no download has resolved yet
    cached = _hf_cached(dataclasses.replace(src, revision=commit)) if commit else None
    if cached is not None and not first:
        return cached, False, commit  # a pinned commit never changes, so a cached file needs no network check
    if cached is not None:
        path = cached  # in the Hub cache already (another tool's download): checked below like a download
    else:
        if local_only:
            why = "HF_HUB_OFFLINE is set" if is_offline() else "downloads are disabled"
            raise WeightsError(f"weights '{entry.name}' are not in the Hugging Face cache ({hf_cache_dir()}) "
                               f"and {why}", how_to_get(entry))
        _check_reachable(endpoint, entry)
        from vpcli import __version__

        if commit is None:  # the branch's commit now: it is what gets downloaded and recorded
            url = hf_hub_url(src.repo_id, src.filename, revision=src.revision, endpoint=endpoint)
            meta = _hub_call(entry, src, url, lambda: get_hf_file_metadata(
                url, endpoint=endpoint, library_name="vpcli", library_version=__version__))
            commit = meta.commit_hash
            if not isinstance(commit, str) or not _COMMIT_RE.fullmatch(commit):
                raise WeightsError(f"weights '{entry.name}': {endpoint} resolved revision {src.revision} of "
                                   f"{src.repo_id} to {commit!r}, not a 40-hex commit",
                                   f"check HF_ENDPOINT ({endpoint}); {how_to_get(entry)}")
        pinned = dataclasses.replace(src, revision=commit)
        url = hf_hub_url(src.repo_id, src.filename, revision=commit, endpoint=endpoint)
        path = Path(_hub_call(entry, pinned, url, lambda: hf_hub_download(
            src.repo_id, src.filename, revision=commit, cache_dir=str(hf_cache_dir()), endpoint=endpoint,
            local_files_only=False, tqdm_class=_progress_bar(progress), library_name="vpcli",
            library_version=__version__)))
    if first:
        where = f"hf://{src.repo_id}@{commit}/{src.filename}"
        try:
            with open(path, "rb") as f:
                _refuse_page(entry, where, f.read(64))
            actual = hashing.file_sha256(path)
            _first_use_checks(entry, where, path, actual)
        except WeightsError:
            _discard(entry, path)
            raise
        from vpcli import __version__
        from vpcli.io.atomic import write_text

        write_text(first_use_dir(entry) / RECORD, json.dumps(
            {"name": entry.name, "repo_id": src.repo_id, "revision": src.revision, "commit": commit,
             "filename": src.filename, "sha256": actual, "bytes": path.stat().st_size,
             "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "vpcli": __version__},
            indent=1) + "\n")
    return path, first, commit


def _hub_call(entry: WeightsEntry, src: HubSource, url: str, call: Callable[[], Any]) -> Any:
    """Run a huggingface_hub call, turning its errors into one-line WeightsErrors that name the entry."""
    from huggingface_hub import errors as hf_errors

    endpoint = hf_endpoint()
    try:
        return call()
    except hf_errors.LocalEntryNotFoundError as e:
        # Raised when the HEAD request failed for a reason other than "not found" (server error,
        # missing headers, dropped connection) and the file is not cached either.
        gist = _first_line(e.__cause__ or e, sentence=True)
        raise WeightsError(f"cannot download weights '{entry.name}' from {url}: {gist}",
                           f"check HF_ENDPOINT ({endpoint}) and your connection; {how_to_get(entry)}") from e
    except hf_errors.RemoteEntryNotFoundError as e:
        raise WeightsError(f"weights '{entry.name}': {src.filename} not found in {src.repo_id} at "
                           f"revision {src.revision} (HTTP 404 for {url})",
                           f"check source.hub in {entry.manifest}") from e
    except hf_errors.RevisionNotFoundError as e:
        raise WeightsError(f"weights '{entry.name}': revision {src.revision} not found in {src.repo_id} "
                           f"(HTTP {_status(e)} for {url})", f"check source.hub.revision in {entry.manifest}") from e
    except hf_errors.RepositoryNotFoundError as e:  # also gated repos
        raise WeightsError(f"weights '{entry.name}': repo {src.repo_id} not found or not accessible "
                           f"(HTTP {_status(e)} for {url})",
                           "check the repo id; for a private or gated repo log in with `hf auth login` "
                           "or set HF_TOKEN") from e
    except hf_errors.HfHubHTTPError as e:
        raise WeightsError(f"cannot download weights '{entry.name}': HTTP {_status(e)} for {url}",
                           f"try again later; {how_to_get(entry)}") from e
    except (OSError, ValueError) as e:  # connection dropped mid-file, size mismatch, disk full...
        raise WeightsError(f"cannot download weights '{entry.name}' from {url}: {_first_line(e)}",
                           f"try again; {how_to_get(entry)}") from e
    except Exception as e:  # httpx errors do not share a base class with OSError
        if type(e).__module__.split(".")[0].startswith("httpx"):
            raise WeightsError(f"cannot download weights '{entry.name}' from {url}: {_first_line(e)}",
                               f"check your connection; {how_to_get(entry)}") from e
        raise


def _refuse_page(entry: WeightsEntry, where: str, head: bytes) -> None:
    """A file whose first bytes are HTML (an error or sign-in page served as a download) is refused."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:16].lower()
    if start.startswith(_HTML_STARTS):
        shown = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:9].decode("ascii", "replace")
        raise WeightsError(f"{where} answered with a web page (it starts with {shown!r}), not the weights file "
                           f"of '{entry.name}'", f"the host may want a browser: download the file there and pass "
                                                 f"--weights /path/to/{entry.source.filename}")


def _first_use_checks(entry: WeightsEntry, where: str, path: Path, actual: str) -> None:
    """What a first download must match before its sha256 is recorded: the manifest's sha256 (a hub
    branch), git blob SHA-1 and sha256 prefix. Raises ChecksumError; the caller removes the file."""
    fix = (f"nothing was kept or recorded; the server sent other bytes than the published file: check the "
           f"source in {entry.manifest}, or fetch the file where its hash is published and pass "
           f"--weights /path/to/{entry.source.filename}")
    if entry.sha256 is not None and actual != entry.sha256:
        raise ChecksumError(f"sha256 mismatch for weights '{entry.name}' downloaded from {where}: expected "
                            f"{entry.sha256} (from the manifest), got {actual}", fix)
    if entry.git_blob_sha1 is not None:
        blob = hashing.git_blob_sha1(path)
        if blob != entry.git_blob_sha1:
            raise ChecksumError(f"git blob SHA-1 mismatch for weights '{entry.name}' downloaded from {where}: "
                                f"expected {entry.git_blob_sha1} (git_blob_sha1 in the manifest), got {blob}", fix)
    if entry.sha256_prefix is not None and not actual.startswith(entry.sha256_prefix):
        raise ChecksumError(f"sha256 prefix mismatch for weights '{entry.name}' downloaded from {where}: "
                            f"expected a sha256 starting {entry.sha256_prefix} (sha256_prefix in the manifest), "
                            f"got {actual}", fix)


def _check_reachable(endpoint: str, entry: WeightsEntry) -> None:
    """Fail fast when the Hub cannot be reached at all.

    huggingface_hub retries a refused or timed-out connection with exponential backoff (about
    23 s in all) before reporting it; one TCP connect tells "no network" apart at once. Skipped
    when a proxy is configured, because then the direct connection says nothing.
    """
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    if parts.scheme in proxies and not urllib.request.proxy_bypass(host):
        return
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e) or type(e).__name__)
        raise WeightsError(f"cannot reach {endpoint} to download weights '{entry.name}': {reason}",
                           f"check your connection or HF_ENDPOINT; {how_to_get(entry)}") from e


def _progress_bar(progress: Progress | None) -> type:
    """A tqdm stand-in for huggingface_hub that forwards byte counts to ``progress`` (or is silent).

    The library layer never prints (DESIGN.md): the CLI decides how progress looks.
    """

    class _Bar:
        def __init__(self, *args, total: int | None = None, initial: int = 0, **kwargs):
            self.n, self.total = initial, total

        def update(self, n: int = 1) -> None:
            self.n += n
            if progress is not None:
                progress(self.n, self.total)

        # The rest of the tqdm surface huggingface_hub touches (http and xet paths).
        def update_transfer(self, n: int = 1) -> None: ...
        def set_postfix_str(self, *args, **kwargs) -> None: ...
        def set_transfer_postfix_str(self, *args, **kwargs) -> None: ...
        def refresh(self) -> None: ...
        def close(self) -> None: ...

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

    return _Bar


# --- pinned URLs -----------------------------------------------------------------------------

def _from_url(entry: WeightsEntry, src: UrlSource, *, download: bool,
              progress: Progress | None) -> tuple[Path, bool]:
    """(the cached file, whether this call recorded a first-use sha256)."""
    dest = _inside_cache(entry, url_cache_path(entry))
    expected = expected_sha256(entry)
    if dest.is_file() and expected is not None:
        return dest, False
    if not download or is_offline():
        why = "HF_HUB_OFFLINE is set" if is_offline() else "downloads are disabled"
        raise WeightsError(f"weights '{entry.name}' are not downloaded ({dest}) and {why}", how_to_get(entry))
    _download_url(entry, src.url, dest, progress, expected)
    return dest, expected is None


def _download_url(entry: WeightsEntry, url: str, dest: Path, progress: Progress | None,
                  expected: str | None) -> None:
    """Stream to a temporary file beside ``dest``, hashing as we go; rename only if the hash matches
    ``expected`` (None: record the hash as the entry's first-use pin, then rename)."""
    from vpcli import __version__
    from vpcli.io.atomic import atomic_path, write_text

    request = urllib.request.Request(url, headers={"User-Agent": f"vpcli/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response, atomic_path(dest) as tmp:
            kind = response.headers.get_content_type()
            # A sign-in, consent or "too large to scan" page is not weights; with nothing to check it
            # against, a first download also refuses any text or JSON answer (an error message).
            if kind in ("text/html", "application/xhtml+xml") or (
                    expected is None and (kind.startswith("text/") or kind == "application/json")):
                what = "a web page" if "html" in kind else "text"
                raise WeightsError(f"{url} answered with {what} ({kind}), not the weights file of '{entry.name}'",
                                   f"the host may want a browser: download the file there and pass "
                                   f"--weights /path/to/{entry.source.filename}")
            total = int(response.headers.get("Content-Length") or 0) or None
            h, done = hashlib.sha256(), 0
            with open(tmp, "wb") as f:
                while chunk := response.read(hashing.CHUNK):
                    if not done:  # an error page served as application/octet-stream is still a page
                        _refuse_page(entry, url, chunk)
                    f.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            if total is not None and done != total:  # a dropped connection must never be recorded or kept
                raise WeightsError(f"download of weights '{entry.name}' from {url} ended after {done} of {total} bytes",
                                   f"try again; {how_to_get(entry)}")
            actual = h.hexdigest()
            if expected is None:  # first use: checked, then the record is written before the file appears
                _first_use_checks(entry, url, tmp, actual)
                write_text(first_use_dir(entry) / RECORD, json.dumps(
                    {"name": entry.name, "url": url, "sha256": actual, "bytes": done,
                     "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "vpcli": __version__},
                    indent=1) + "\n")
            elif actual != expected:  # the temporary is removed; nothing bad is cached
                if entry.sha256:
                    pin, hint = "the manifest", f"the server returned different content; check source.url in {entry.manifest}"
                else:
                    pin = f"its first download, {first_use_dir(entry) / RECORD}"
                    hint = (f"the server now returns different content; if the publisher replaced the file on "
                            f"purpose, delete {first_use_dir(entry)} to record anew")
                raise ChecksumError(f"sha256 mismatch for weights '{entry.name}' downloaded from {url}: "
                                    f"expected {expected} (from {pin}), got {actual}", hint)
    except urllib.error.HTTPError as e:
        raise WeightsError(f"cannot download weights '{entry.name}': HTTP {e.code} {e.reason} for {url}",
                           f"check source.url in {entry.manifest}; {how_to_get(entry)}") from e
    except urllib.error.URLError as e:
        reason = e.reason.strerror if isinstance(e.reason, OSError) and e.reason.strerror else e.reason
        raise WeightsError(f"cannot download weights '{entry.name}' from {url}: {reason}",
                           f"check your connection; {how_to_get(entry)}") from e
    except (OSError, http.client.HTTPException) as e:  # timeouts, resets mid-stream
        raise WeightsError(f"cannot download weights '{entry.name}' from {url}: {_first_line(e)}",
                           f"try again; {how_to_get(entry)}") from e
    hashing.remember(dest, actual)


# --- helpers ---------------------------------------------------------------------------------

def _inside_cache(entry: WeightsEntry, dest: Path) -> Path:
    """Refuse a cache path that resolves outside vpcli's cache folder (defence in depth: the
    manifest check already refuses file names that are not plain names).

    The comparison is on normalised absolute paths ('..' resolved), not on symlink targets: a
    user may keep part of the cache on another disk behind a link.
    """
    root = Path(os.path.normpath(os.path.abspath(hashing.vpcli_cache_dir())))
    target = Path(os.path.normpath(os.path.abspath(dest)))
    if target == root or not target.is_relative_to(root / "url"):
        raise WeightsError(f"weights '{entry.name}': the file name {entry.source.filename!r} would put the "
                           f"download at {target}, outside the cache folder {root / 'url'}",
                           f"fix source.url (or give source.filename a plain name) in {entry.manifest}")
    return dest


def _discard(entry: WeightsEntry, path: Path) -> bool:
    """Delete a cached copy that failed its hash; never a bundled or user file. True if deleted."""
    src = entry.source
    if isinstance(src, BundledSource):
        return False
    if isinstance(src, HubSource):
        root = hf_cache_dir().resolve()
        # The snapshot entry is a symlink to a blob named by its etag; both must go, or
        # huggingface_hub would relink the bad blob on the next download.
        targets = [path, Path(os.path.realpath(path))]
    else:
        root = hashing.vpcli_cache_dir().resolve()
        targets = [path]
    hashing.forget(path)
    removed = False
    for target in targets:
        try:
            if Path(os.path.realpath(target.parent)).is_relative_to(root) and (target.is_symlink() or target.exists()):
                target.unlink()
                removed = True
        except OSError:
            pass
    return removed


def _status(err: Exception) -> str:
    response = getattr(err, "response", None)
    return str(getattr(response, "status_code", "?"))


def _first_line(err: BaseException, sentence: bool = False) -> str:
    """The gist of a library error: its first line (huggingface_hub's messages are paragraphs)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    return text.split(". ")[0].rstrip(".") if sentence else text
