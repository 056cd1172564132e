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
"""
from __future__ import annotations

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
    """Where an ``unpublished`` entry's file and its recorded sha256 live: one folder per name and URL."""
    assert isinstance(entry.source, UrlSource)
    tag = hashlib.sha256(entry.source.url.encode()).hexdigest()[:12]
    return hashing.vpcli_cache_dir() / "url" / "first-use" / f"{entry.name}-{tag}"


def recorded_sha256(entry: WeightsEntry) -> dict | None:
    """The record of an ``unpublished`` entry's first download (sha256, url, when), or None."""
    if entry.sha256 is not None or not isinstance(entry.source, UrlSource):
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
    if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha):
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


RECORD = "sha256.json"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


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
    return resolve_entry(registry.get(name), download=download, progress=progress)


def resolve_entry(entry: WeightsEntry, *, download: bool = True, progress: Progress | None = None,
                  trust_first_use: bool = False) -> ResolvedWeights:
    """Find or fetch the entry's file, then check its sha256 (deleting a bad cached copy).

    ``trust_first_use``: an ``unpublished`` entry with no recorded hash may be downloaded, and the
    sha256 of what arrives is recorded (``first_use`` is then True on the result). Without it such
    an entry raises a WeightsError that says to run `vpcli weights download NAME`.
    """
    src = entry.source
    first_use = False
    if isinstance(src, BundledSource):
        if not src.path.is_file():
            raise WeightsError(f"bundled weights file for '{entry.name}' is missing: {src.path}",
                               how_to_get(entry))
        path = src.path
    elif isinstance(src, HubSource):
        path = _from_hub(entry, src, download=download, progress=progress)
    else:
        if expected_sha256(entry) is None and not trust_first_use:
            raise WeightsError(f"weights '{entry.name}' have no published sha256, so vpcli fetches them only "
                               f"when asked", how_to_get(entry))
        path, first_use = _from_url(entry, src, download=download, progress=progress)
    sha = check_sha256(entry, path)
    return ResolvedWeights(path=path, name=entry.name, sha256=sha, source=src.kind, first_use=first_use)


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
        cached = _hf_cached(src)
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
        return (f"run `vpcli weights download {entry.name}` while online{offline}, or download "
                f"{src.filename} from {src.repo_id} at {src.revision[:12]} and pass --weights /path/to/{src.filename}")
    if expected_sha256(entry) is None:
        return (f"run `vpcli weights download {entry.name}` once while online{offline}: its publisher gives no "
                f"sha256, so vpcli records the first download's and checks every later load against it; "
                f"or fetch {src.url} yourself and pass --weights /path/to/{src.filename}")
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


def _from_hub(entry: WeightsEntry, src: HubSource, *, download: bool, progress: Progress | None) -> Path:
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download, hf_hub_url

    endpoint = hf_endpoint()
    url = hf_hub_url(src.repo_id, src.filename, revision=src.revision, endpoint=endpoint)
    local_only = not download or is_offline()
    cached = _hf_cached(src)
    if cached is not None:
        return cached  # a pinned commit never changes, so a cached file needs no network check
    if local_only:
        why = "HF_HUB_OFFLINE is set" if is_offline() else "downloads are disabled"
        raise WeightsError(f"weights '{entry.name}' are not in the Hugging Face cache ({hf_cache_dir()}) "
                           f"and {why}", how_to_get(entry))
    _check_reachable(endpoint, entry)
    from vpcli import __version__

    try:
        path = hf_hub_download(src.repo_id, src.filename, revision=src.revision, cache_dir=str(hf_cache_dir()),
                               endpoint=endpoint, local_files_only=False, tqdm_class=_progress_bar(progress),
                               library_name="vpcli", library_version=__version__)
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
    return Path(path)


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
                    f.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            if total is not None and done != total:  # a dropped connection must never be recorded or kept
                raise WeightsError(f"download of weights '{entry.name}' from {url} ended after {done} of {total} bytes",
                                   f"try again; {how_to_get(entry)}")
            actual = h.hexdigest()
            if expected is None:  # first use: the record is written before the file appears
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
