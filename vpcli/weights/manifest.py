"""The weights manifest: every named set of weights vpcli knows, as typed and validated data.

A manifest is a YAML file (read with ``yaml.safe_load``)::

    version: 1
    weights:
      - name: slamp-mmnist              # unique; letters, digits, '.', '_', '-'
        task: predictor                 # predictor | segmenter | flow | metric
        arch: slamp                     # registry name of the architecture
        config: {hidden: 128}           # a mapping, or a file path relative to this manifest
        source:                         # exactly one of the three kinds:
          bundled: assets/weights/slamp-mmnist.safetensors   # relative to this manifest's folder (*)
          # hub: {repo_id: org/name, revision: <40-hex commit>, filename: model.safetensors}
          # url: https://example.org/slamp-mmnist.safetensors
        sha256: <64 hex digits>         # always checked by vpcli itself (see UNPUBLISHED below)
        license: MIT
        trained_on: "moving digits, 64x64, 100k steps on this project's CI box"
        metrics: {psnr: 18.2}           # what it scored, on what; may be {}
        description: optional free text

The bundled manifest (``weights_manifest.yaml`` at the repository root, packaged into the wheel;
see :data:`BUNDLED_MANIFEST`) is read first, then every file in
``$VPCLI_MANIFEST`` (``os.pathsep``-separated), then ``--manifest`` files. Later manifests may add
entries but never redefine a name: a name defined twice is an error naming both places.
(*) The bundled manifest is the exception: its relative paths start from the vpcli package
folder (:data:`PACKAGE_DIR`, which holds ``assets/weights/``), in a checkout and installed alike.

A ``url`` source whose publisher gives no hash (VainF's DeepLabV3+ and sniklaus' PWC-Net
checkpoints) may say ``sha256: unpublished``: vpcli then downloads it only when asked to
(`vpcli weights download NAME`), records the sha256 of that first download in its cache, and
checks every later load and re-download against the record (trust on first use; see
resolve.py). ``source: {url: ..., filename: NAME}`` names the file when the URL's last path
segment is not a useful name (e.g. Google Drive's ``.../download?id=...``).

Such an entry (url or hub) may carry what its publisher does give, which the first download must
match before its sha256 is recorded and pinned:

- ``git_blob_sha1: <40 hex>``: git's blob hash of the file (SHA-1 of ``b"blob <size>\\0" + bytes``),
  as a repository that commits the file publishes it. A full-strength pin: the entry is fetched
  like one with a published sha256 (also implicitly, and by ``--all``).
- ``sha256_prefix: <8 to 63 hex>``: the start of its sha256 (torchvision puts the first 8 hex
  digits in its file names, e.g. ``vgg16-397923af.pth``). Too short to pin alone: the first
  download is still only on request.

A hub source may name a branch or tag (``revision: main``) instead of a commit: the first download
resolves it to its 40-hex commit and records that commit with the sha256 (pinned on first use);
every later resolve uses the recorded commit, wherever the branch moves.

``requires: [NAME, ...]`` lists entries this one is used together with (the torchvision AlexNet
backbone under the LPIPS head of ``lpips-alex``): resolving or downloading the entry resolves its
requirements first. Every name must be defined in one of the manifests read, with no cycle.

Every validation error is a :class:`~vpcli.errors.ManifestError` naming the file, the entry
(index and name) and the field, so a typo can be fixed without reading this module.
"""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Union
from urllib.parse import unquote, urlsplit

from vpcli.errors import ManifestError, WeightsError

MANIFEST_VERSION = 1
ENV_VAR = "VPCLI_MANIFEST"
MANIFEST_NAME = "weights_manifest.yaml"
# The vpcli package folder. Relative paths in the bundled manifest (``assets/weights/...``) are
# taken from here, wherever the manifest itself lies: at the repository root in a checkout, copied
# into the package by the wheel build (setup.py) when installed.
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _bundled_locations() -> tuple[Path, ...]:
    """Where the bundled manifest may lie, preferred first: the root of a source checkout (the
    folder above the package holds pyproject.toml), then the copy inside an installed package."""
    root = PACKAGE_DIR.parent
    checkout = (root / MANIFEST_NAME,) if (root / "pyproject.toml").is_file() else ()
    return (*checkout, PACKAGE_DIR / MANIFEST_NAME)


BUNDLED_LOCATIONS = _bundled_locations()
BUNDLED_MANIFEST = next((p for p in BUNDLED_LOCATIONS if p.is_file()), BUNDLED_LOCATIONS[-1])


def files_base(manifest: Path) -> Path:
    """The folder a manifest's relative paths start from: :data:`PACKAGE_DIR` for the bundled
    manifest, the manifest's own folder for every other."""
    return PACKAGE_DIR if Path(os.path.abspath(manifest)) in BUNDLED_LOCATIONS else Path(manifest).parent

TASKS = ("predictor", "segmenter", "flow", "metric")
# What data weights are meant for: predict's default picks by it and says so; `weights list` shows it.
WORKS_ON = ("digits", "synthetic-streets", "real-video", "real-images")
REQUIRED_FIELDS = ("name", "task", "arch", "config", "source", "sha256", "license", "trained_on", "metrics")
OPTIONAL_FIELDS = ("description", "parts", "git_blob_sha1", "sha256_prefix", "requires")
OPTIONAL_FIELDS += ("works_on",)  # where the weights work: WORKS_ON tags (`vpcli weights list`, predict's default)
OPTIONAL_FIELDS += ("convert",)  # `convert: NAME`: converted into safetensors after download (convert_on_download.py)
CONVERTERS = ("slamp-official",)  # the names `convert:` accepts
ENTRY_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
TOP_FIELDS = ("version", "weights")
SOURCE_KINDS = ("bundled", "hub", "url")
URL_OPTIONS = ("filename",)  # may sit beside `url:` in a source mapping
UNPUBLISHED = "unpublished"  # the sha256 of a url source whose publisher gives none (trust on first use)
HUB_FIELDS = ("repo_id", "revision", "filename")

# Names may not contain '/' so that a name can never be mistaken for a path (see resolve.py).
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HEX40_RE = re.compile(r"[0-9a-f]{40}")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
_HEX40_ANY_RE = re.compile(r"[0-9a-fA-F]{40}")
_PREFIX_RE = re.compile(r"[0-9a-fA-F]{8,63}")
# A branch or tag name (git's rules, roughly): resolved to a commit and pinned at the first download.
_REF_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}")
# Hub repo ids: "name" or "owner/name" (the Hub's own rules are stricter; it reports the rest).
_REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


# --- typed data ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BundledSource:
    """A file shipped next to the manifest (inside the package for the bundled manifest)."""

    relpath: str
    path: Path  # absolute: relpath resolved against the manifest's folder
    kind: ClassVar[str] = "bundled"

    @property
    def filename(self) -> str:
        return Path(self.relpath).name

    def describe(self) -> str:
        return str(self.path)

    def to_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path)}


@dataclass(frozen=True)
class HubSource:
    """A file in a Hugging Face Hub repo, pinned to one commit."""

    repo_id: str
    revision: str  # 40 hex; or a branch/tag, resolved to a commit and recorded at the first download
    filename: str
    kind: ClassVar[str] = "hub"

    @property
    def is_commit(self) -> bool:
        """Whether ``revision`` is a commit (else a branch or tag, which may move)."""
        return bool(_HEX40_RE.fullmatch(self.revision))

    def describe(self) -> str:
        return f"hf://{self.repo_id}@{self.revision}/{self.filename}"

    def to_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "repo_id": self.repo_id, "revision": self.revision, "filename": self.filename}


@dataclass(frozen=True)
class UrlSource:
    """A file at a fixed URL; the manifest's sha256 is what pins it."""

    url: str
    name: str | None = None  # `filename:` in the manifest; default: the URL's last path segment
    kind: ClassVar[str] = "url"

    @property
    def filename(self) -> str:
        return self.name or unquote(Path(urlsplit(self.url).path).name) or "weights"

    def describe(self) -> str:
        return self.url

    def to_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "filename": self.filename}


Source = Union[BundledSource, HubSource, UrlSource]


@dataclass(frozen=True)
class WeightsEntry:
    """One named set of weights. ``manifest`` and ``index`` say where it was defined."""

    name: str
    task: str
    arch: str
    config: Mapping[str, Any] | Path = field(hash=False)  # inline mapping, or absolute path to a file
    source: Source
    sha256: str | None  # lower-case hex; None: `unpublished` (a url source, pinned on first download)
    license: str
    trained_on: str
    metrics: Mapping[str, Any] = field(hash=False)
    description: str | None
    manifest: Path
    index: int
    parts: tuple[str, ...] | None = None  # the parts of a multi-part method the file holds (None: all)
    convert: str | None = None  # a CONVERTERS name: the file is converted after download (sha256: the original)
    git_blob_sha1: str | None = None  # lower-case hex; checked at the first download of an unpublished entry
    sha256_prefix: str | None = None  # lower-case hex; the first download's sha256 must start with it
    requires: tuple[str, ...] = ()  # entries resolved together with this one
    works_on: tuple[str, ...] = ()  # WORKS_ON tags; () = not said

    @property
    def published(self) -> bool:
        """Whether the manifest carries the file's sha256 (else it is recorded on first download)."""
        return self.sha256 is not None

    @property
    def pinned_by_manifest(self) -> bool:
        """Whether the manifest alone fixes the file's bytes (a sha256 or a git blob SHA-1), so that
        a first download needs no decision about trust. A sha256 prefix is too short for that."""
        return self.sha256 is not None or self.git_blob_sha1 is not None

    @property
    def records_first_use(self) -> bool:
        """Whether the first download writes a record: an unpublished sha256, or a hub branch/tag
        whose commit must be pinned."""
        return self.sha256 is None or (isinstance(self.source, HubSource) and not self.source.is_commit)

    @property
    def verification(self) -> str:
        """How the file is checked, in words: ``bundled``, ``published sha256``, ``git blob SHA-1``,
        ``sha256 prefix`` (both: ``git blob SHA-1 + sha256 prefix``) or ``pinned on first use``.
        All but the first two record the first download's sha256 and pin it."""
        if isinstance(self.source, BundledSource):
            return "bundled"
        if self.sha256:
            return "published sha256"
        kinds = (["git blob SHA-1"] if self.git_blob_sha1 else []) + (["sha256 prefix"] if self.sha256_prefix else [])
        return " + ".join(kinds) or "pinned on first use"

    @property
    def where(self) -> str:
        """``file: weights[i] 'name'`` — how error messages point at this entry."""
        return f"{self.manifest}: weights[{self.index}] '{self.name}'"

    def load_config(self) -> dict[str, Any]:
        """The config as a plain dict, reading the config file if the manifest names one."""
        if isinstance(self.config, Path):
            import yaml

            try:
                data = yaml.safe_load(self.config.read_text(encoding="utf-8"))
            except OSError as e:
                raise ManifestError(f"{self.where}: cannot read config file {self.config}: {e.strerror}",
                                    "config paths are relative to the manifest's folder") from None
            except yaml.YAMLError as e:
                raise ManifestError(f"{self.where}: config file {self.config} is not valid YAML/JSON: "
                                    f"{_one_line(e)}", "fix the syntax of that config file (YAML or JSON)") from None
            if not isinstance(data, dict):
                raise ManifestError(f"{self.where}: config file {self.config} must hold a mapping, "
                                    f"got {type(data).__name__}",
                                    "the config file holds the model config as 'key: value' pairs")
            return data
        return dict(self.config)

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict with every field (what ``vpcli weights info --json`` prints)."""
        return {
            "name": self.name,
            "task": self.task,
            "arch": self.arch,
            "config": str(self.config) if isinstance(self.config, Path) else _plain(self.config),
            "source": self.source.to_record(),
            "sha256": self.sha256 or UNPUBLISHED,
            "license": self.license,
            "trained_on": self.trained_on,
            "metrics": _plain(self.metrics),
            "description": self.description,
            "parts": list(self.parts) if self.parts else None,
            "convert": self.convert,
            "git_blob_sha1": self.git_blob_sha1,
            "sha256_prefix": self.sha256_prefix,
            "requires": list(self.requires),
            "works_on": list(self.works_on),
            "verification": self.verification,
            "manifest": str(self.manifest),
        }


class WeightsRegistry:
    """All entries from the manifests that were loaded, by name, in definition order."""

    def __init__(self, entries: Iterable[WeightsEntry] = (), manifests: Sequence[Path] = ()):
        self.manifests: tuple[Path, ...] = tuple(manifests)
        self._entries: dict[str, WeightsEntry] = {}
        for entry in entries:
            first = self._entries.get(entry.name)
            if first is not None:
                raise ManifestError(
                    f"weights name '{entry.name}' is defined twice: {first.manifest} (weights[{first.index}]) "
                    f"and {entry.manifest} (weights[{entry.index}])",
                    "names are global across manifests; rename one of them")
            self._entries[entry.name] = entry
        self._check_requires()

    def _check_requires(self) -> None:
        """Every ``requires`` name is defined, and no entry requires itself through others."""
        for entry in self._entries.values():
            for name in entry.requires:
                if name not in self._entries:
                    close = difflib.get_close_matches(name, list(self._entries), n=1, cutoff=0.6)
                    raise ManifestError(f"{entry.where}: field 'requires' names unknown weights '{name}'",
                                        f"did you mean '{close[0]}'?" if close else
                                        "define that entry in a manifest that is read too (--manifest, $VPCLI_MANIFEST)")
        state: dict[str, int] = {}  # 1: on the current path, 2: done

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = path[path.index(name):] + [name]
                first = self._entries[cycle[0]]
                raise ManifestError(f"{first.where}: field 'requires' makes a cycle: {' -> '.join(cycle)}",
                                    "an entry cannot require itself, also not through others")
            state[name] = 1
            for req in self._entries[name].requires:
                visit(req, path + [name])
            state[name] = 2

        for name in self._entries:
            visit(name, [])

    def requirements(self, entry: WeightsEntry) -> list[WeightsEntry]:
        """Every entry that ``entry`` requires, directly or through others, each once, those
        required by others first (the order to fetch them in); ``entry`` itself not included."""
        order: list[WeightsEntry] = []
        seen: set[str] = {entry.name}

        def visit(e: WeightsEntry) -> None:
            for name in e.requires:
                if name not in seen:
                    seen.add(name)
                    req = self.get(name)
                    visit(req)
                    order.append(req)

        visit(entry)
        return order

    def get(self, name: str) -> WeightsEntry:
        try:
            return self._entries[name]
        except KeyError:
            pass
        close = difflib.get_close_matches(name, list(self._entries), n=5, cutoff=0.5)
        if close:
            hint = "did you mean: " + ", ".join(close) + "?"
        elif self._entries:
            hint = "known names: " + ", ".join(list(self._entries)[:20]) + \
                   (", ..." if len(self._entries) > 20 else "") + " (see `vpcli weights list`)"
        else:
            hint = "no weights are defined yet; add a manifest with --manifest or $VPCLI_MANIFEST"
        raise WeightsError(f"unknown weights '{name}'", hint)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[WeightsEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"WeightsRegistry({len(self)} entries from {len(self.manifests)} manifests)"


# --- loading ---------------------------------------------------------------------------------

def manifest_paths(extra: Iterable[str | os.PathLike] = (), *, env: bool = True,
                   bundled: bool = True) -> list[Path]:
    """The manifest files to read, in order: bundled, ``$VPCLI_MANIFEST``, then ``extra``.

    A file named twice is read once (it would otherwise clash with itself).
    """
    candidates: list[Path] = []
    if bundled:
        candidates.append(BUNDLED_MANIFEST)
    if env:
        candidates += [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    candidates += [Path(p) for p in extra]
    seen: set[Path] = set()
    paths = []
    for p in candidates:
        p = Path(os.path.abspath(os.path.expanduser(p)))
        if p not in seen:
            seen.add(p)
            paths.append(p)
    return paths


def load_manifests(extra: Iterable[str | os.PathLike] = (), *, env: bool = True,
                   bundled: bool = True) -> WeightsRegistry:
    """Read and validate every manifest (see :func:`manifest_paths`) into one registry."""
    paths = manifest_paths(extra, env=env, bundled=bundled)
    entries: list[WeightsEntry] = []
    for path in paths:
        entries += load_manifest(path)
    return WeightsRegistry(entries, paths)


def load_manifest(path: str | os.PathLike) -> list[WeightsEntry]:
    """Parse one manifest file; relative paths in it are taken from the file's folder."""
    import yaml  # only the manifest needs it; keep `import vpcli.weights` cheap

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"manifest file not found: {path}",
                            f"check the paths given with --manifest and in ${ENV_VAR}") from None
    except OSError as e:
        raise ManifestError(f"cannot read manifest {path}: {e.strerror}",
                            "check that the file is readable (permissions), or drop that --manifest") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: not valid YAML: {_one_line(e)}",
                            "fix the YAML at that line: 'key: value' pairs, entries under weights: as '- name: ...', indented by spaces") from None
    return parse_manifest(data, path)


def parse_manifest(data: Any, path: Path) -> list[WeightsEntry]:
    """Validate already-loaded YAML data; ``path`` is used for messages and relative paths."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ManifestError(f"{path}: a manifest must be a mapping with 'version' and 'weights', got {got}",
                            f"start the file with 'version: {MANIFEST_VERSION}' and 'weights:'")
    _check_keys(data, TOP_FIELDS, f"{path}: top level", required=TOP_FIELDS)
    if data["version"] != MANIFEST_VERSION:
        raise ManifestError(f"{path}: unsupported manifest version {data['version']!r}",
                            f"this vpcli reads 'version: {MANIFEST_VERSION}'")
    items = data["weights"]
    if items is None:  # `weights:` with nothing under it
        items = []
    if not isinstance(items, list):
        raise ManifestError(f"{path}: 'weights' must be a list of entries, got {type(items).__name__}",
                            "write each entry as a '- name: ...' item under 'weights:'")
    entries: list[WeightsEntry] = []
    first_index: dict[str, int] = {}
    for i, item in enumerate(items):
        entry = _parse_entry(item, i, path)
        if entry.name in first_index:
            raise ManifestError(
                f"{path}: duplicate name '{entry.name}' at weights[{first_index[entry.name]}] "
                f"and weights[{i}]", "every entry needs a unique name")
        first_index[entry.name] = i
        entries.append(entry)
    return entries


def _parse_entry(item: Any, index: int, path: Path) -> WeightsEntry:
    where = f"{path}: weights[{index}]"
    if not isinstance(item, dict):
        raise ManifestError(f"{where}: an entry must be a mapping, got {type(item).__name__}",
                            "each item under weights: is a mapping starting with '- name: NAME'")
    name = item.get("name")
    if isinstance(name, str):
        where += f" '{name}'"
    _check_keys(item, ENTRY_FIELDS, where, required=REQUIRED_FIELDS)

    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ManifestError(f"{where}: field 'name' must be letters, digits, '.', '_' or '-' "
                            f"(starting with a letter or digit), got {name!r}", "e.g. name: slamp-movingdigits")
    task = item["task"]
    if task not in TASKS:
        close = difflib.get_close_matches(str(task), TASKS, n=1)
        raise ManifestError(f"{where}: field 'task' must be one of {', '.join(TASKS)}, got {task!r}",
                            f"did you mean '{close[0]}'?" if close else None)
    source = _parse_source(item["source"], where, path)
    sha = item["sha256"]
    if sha == UNPUBLISHED:
        if isinstance(source, BundledSource):
            raise ManifestError(f"{where}: 'sha256: {UNPUBLISHED}' is only for url and hub sources, not bundled",
                                "give the file's sha256 (compute it with `sha256sum FILE`)")
    elif not isinstance(sha, str) or not _HEX64_RE.fullmatch(sha):
        raise ManifestError(f"{where}: field 'sha256' must be 64 hex digits (or '{UNPUBLISHED}' for a URL "
                            f"whose publisher gives none), got {_short(sha)}", "compute it with `sha256sum FILE`")
    blob_sha1, prefix = _parse_first_use_checks(item, sha == UNPUBLISHED, where)
    return WeightsEntry(
        name=name,
        task=task,
        arch=_text(item, "arch", where),
        config=_parse_config(item["config"], where, path),
        source=source,
        sha256=None if sha == UNPUBLISHED else sha.lower(),
        license=_text(item, "license", where),
        trained_on=_text(item, "trained_on", where),
        metrics=_parse_metrics(item["metrics"], where),
        description=_text(item, "description", where) if item.get("description") is not None else None,
        manifest=path,
        index=index,
        parts=_parse_parts(item.get("parts"), where),
        convert=_parse_convert(item.get("convert"), where),
        git_blob_sha1=blob_sha1,
        sha256_prefix=prefix,
        requires=_parse_requires(item.get("requires"), name, where),
        works_on=_parse_works_on(item.get("works_on"), where),
    )


def _parse_first_use_checks(item: dict, unpublished: bool, where: str) -> tuple[str | None, str | None]:
    """``git_blob_sha1`` and ``sha256_prefix``: what the first download of an unpublished entry must match."""
    found = []
    for key, regex, what, example in (
            ("git_blob_sha1", _HEX40_ANY_RE, "40 hex digits (git's blob hash: `git hash-object FILE`)",
             "git_blob_sha1: 93daef59c7ae0e9e8f76225521407e60cbafa6aa"),
            ("sha256_prefix", _PREFIX_RE, "8 to 63 hex digits (the start of the file's sha256)",
             "sha256_prefix: 397923af (from vgg16-397923af.pth)")):
        value = item.get(key)
        if value is None:
            found.append(None)
            continue
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise ManifestError(f"{where}: field '{key}' must be {what}, got {_short(value)}", f"e.g. {example}")
        if not unpublished:
            raise ManifestError(f"{where}: field '{key}' is only for entries with 'sha256: {UNPUBLISHED}'; "
                                "the published sha256 already pins the file",
                                f"drop '{key}', or say 'sha256: {UNPUBLISHED}' if the sha256 is not published")
        found.append(value.lower())
    return found[0], found[1]


def _parse_requires(value: Any, name: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and _NAME_RE.fullmatch(v)
                                                           for v in value):
        raise ManifestError(f"{where}: field 'requires' must be a list of weights names, got {_short(value)}",
                            "e.g. requires: [alexnet-torchvision]; leave it out when the entry stands alone")
    if name in value:
        raise ManifestError(f"{where}: field 'requires' names the entry itself", "list only other entries")
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        raise ManifestError(f"{where}: field 'requires' names '{dupes[0]}' twice", "list each entry once")
    return tuple(value)


def _parse_works_on(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(v in WORKS_ON for v in value):
        raise ManifestError(f"{where}: field 'works_on' must be a list of {', '.join(WORKS_ON)}, got {_short(value)}",
                            "e.g. works_on: [synthetic-streets]: the data the weights are meant for")
    return tuple(dict.fromkeys(value))


def _parse_convert(value: Any, where: str) -> str | None:
    if value is None or value in CONVERTERS:
        return value
    raise ManifestError(f"{where}: field 'convert' must be one of {', '.join(CONVERTERS)}, got {_short(value)}",
                        "leave it out for a file vpcli reads as it is")


def _parse_parts(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and _NAME_RE.fullmatch(v)
                                                           for v in value):
        raise ManifestError(f"{where}: field 'parts' must be a list of part names, got {_short(value)}",
                            "e.g. parts: [structure]; leave it out for a file holding every part")
    return tuple(value)


def _parse_config(value: Any, where: str, path: Path) -> Mapping[str, Any] | Path:
    if isinstance(value, dict):
        return MappingProxyType(dict(value))
    if isinstance(value, str) and value.strip():
        if os.path.isabs(value):
            raise ManifestError(f"{where}: field 'config' must be a mapping or a relative file path, "
                                f"got the absolute path {value!r}", "paths are relative to the manifest's folder")
        return files_base(path) / value
    raise ManifestError(f"{where}: field 'config' must be a mapping or a relative file path, got {_short(value)}",
                        "e.g. config: {arch: ..., ...} or config: configs/NAME.yaml")


def _parse_metrics(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: field 'metrics' must be a mapping (may be empty: {{}}), "
                            f"got {type(value).__name__}", "e.g. metrics: {psnr: 14.1}, or metrics: {}")
    return MappingProxyType(dict(value))


def _parse_source(value: Any, where: str, path: Path) -> Source:
    if not isinstance(value, dict) or not value:
        raise ManifestError(f"{where}: field 'source' must be a mapping with one of "
                            f"{', '.join(SOURCE_KINDS)}, got {_short(value)}",
                            "e.g. source: {bundled: assets/weights/x.safetensors}")
    kinds = [k for k in value if k in SOURCE_KINDS]
    if len(kinds) > 1:
        raise ManifestError(f"{where}: field 'source' has {len(kinds)} sources ({', '.join(kinds)}); "
                            "give exactly one", "list a mirror as a separate entry if you need two")
    _check_keys(value, SOURCE_KINDS + URL_OPTIONS, f"{where}: source", required=())
    kind = kinds[0] if kinds else None
    options = [k for k in value if k in URL_OPTIONS]
    if options and kind != "url":
        raise ManifestError(f"{where}: field 'source.{options[0]}' applies only to url sources",
                            "hub and bundled sources name their file themselves")
    if kind is None:  # only reachable for an empty-after-check mapping; _check_keys caught typos
        raise ManifestError(f"{where}: field 'source' needs one of {', '.join(SOURCE_KINDS)}",
                            "e.g. source: {bundled: assets/weights/x.safetensors}")
    spec = value[kind]

    if kind == "bundled":
        if not isinstance(spec, str) or not spec.strip() or os.path.isabs(spec):
            raise ManifestError(f"{where}: field 'source.bundled' must be a file path relative to the "
                                f"manifest's folder, got {_short(spec)}",
                                "e.g. source: {bundled: assets/weights/x.safetensors}")
        base = files_base(path)
        bundled = Path(os.path.normpath(base / spec))
        _check_inside(bundled, base, spec, where)
        return BundledSource(relpath=spec, path=bundled)

    if kind == "hub":
        field_where = f"{where}: source.hub"
        if not isinstance(spec, dict):
            raise ManifestError(f"{field_where} must be a mapping with {', '.join(HUB_FIELDS)}, "
                                f"got {_short(spec)}",
                                "e.g. hub: {repo_id: owner/name, revision: <40-hex commit>, filename: model.safetensors}")
        _check_keys(spec, HUB_FIELDS, field_where, required=HUB_FIELDS)
        repo_id, revision, filename = spec["repo_id"], spec["revision"], spec["filename"]
        if not isinstance(repo_id, str) or not _REPO_ID_RE.fullmatch(repo_id):
            raise ManifestError(f"{where}: field 'source.hub.repo_id' must look like 'owner/name', "
                                f"got {_short(repo_id)}", "e.g. repo_id: vpcli/slamp-weights")
        # A branch or tag is pinned on first use (its commit is recorded at the first download);
        # 40 hex digits in another case are a mistyped commit, not a branch.
        if not isinstance(revision, str) or not (_HEX40_RE.fullmatch(revision) or (
                _REF_RE.fullmatch(revision) and not _HEX40_ANY_RE.fullmatch(revision)
                and ".." not in revision and "//" not in revision
                and not revision.endswith(("/", ".", ".lock")))):
            raise ManifestError(
                f"{where}: field 'source.hub.revision' must be a full commit hash (40 lower-case hex "
                f"characters) or a branch or tag name, got {_short(revision)}",
                "copy the full hash from the repo's history; a branch (e.g. main) is resolved to its commit "
                "and pinned at the first download")
        if not isinstance(filename, str) or not _is_repo_path(filename):
            raise ManifestError(f"{where}: field 'source.hub.filename' must be a path inside the repo "
                                f"('/'-separated names, no '..', '.', empty or absolute parts), got {_short(filename)}",
                                "write the file's path as the repo's file list shows it, e.g. model.safetensors")
        return HubSource(repo_id=repo_id, revision=revision, filename=filename)

    # kind == "url"
    if not isinstance(spec, str):
        raise ManifestError(f"{where}: field 'source.url' must be an https URL, got {_short(spec)}",
                            "e.g. url: https://example.org/files/model.safetensors")
    parts = urlsplit(spec)
    # Plain http is accepted only for loopback hosts (local mirrors, tests); the sha256 pins content.
    secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS)
    if not secure or not parts.netloc or not parts.path.strip("/"):
        raise ManifestError(f"{where}: field 'source.url' must be an https URL of a file, got {_short(spec)}",
                            "e.g. url: https://example.org/files/model.safetensors")
    filename = value.get("filename")
    if filename is not None and (not isinstance(filename, str) or not _NAME_RE.fullmatch(filename)):
        raise ManifestError(f"{where}: field 'source.filename' must be a plain file name (letters, digits, "
                            f"'.', '_', '-'), got {_short(filename)}", "e.g. filename: model.safetensors")
    source = UrlSource(url=spec, name=filename)
    # The cached file is named after the URL's last segment (unquoted) unless `filename:` says
    # otherwise: it must pass the same rule, or '..%2F..%2Fx' would name a file outside the cache.
    if filename is None and not _NAME_RE.fullmatch(source.filename):
        raise ManifestError(f"{where}: field 'source.url' must end in a plain file name (letters, digits, '.', "
                            f"'_', '-'), but its last segment unquotes to {_short(source.filename)}",
                            "add `filename: NAME` to the source to name the downloaded file")
    return source


# --- helpers ---------------------------------------------------------------------------------

def _check_inside(target: Path, base: Path, spec: str, where: str) -> None:
    """A bundled file must lie inside the folder the manifest's paths start from (``base``: see
    :func:`files_base`), compared after normalising '..'."""
    base = Path(os.path.normpath(os.path.abspath(base)))
    if not Path(os.path.normpath(os.path.abspath(target))).is_relative_to(base):
        raise ManifestError(f"{where}: field 'source.bundled' names a file outside {base}, the folder its "
                            f"paths start from: {_short(spec)}",
                            "bundled files ship with their manifest; give a path inside that folder, or use "
                            "--weights /path/to/file for a file elsewhere")


def _is_repo_path(name: str) -> bool:
    """A relative, '/'-separated path of plain parts: nothing that can leave the repo's snapshot."""
    if not name.strip() or "\\" in name or "\0" in name or name.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def _check_keys(mapping: dict, valid: Sequence[str], where: str, *, required: Sequence[str]) -> None:
    """Unknown keys first (a typo also makes the real key look missing), then missing ones."""
    for key in mapping:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"valid fields: {', '.join(valid)}"
            raise ManifestError(f"{where}: unknown field '{key}'", hint)
    missing = [k for k in required if k not in mapping]
    if missing:
        raise ManifestError(f"{where}: missing required field '{missing[0]}'"
                            + (f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""),
                            f"required here: {', '.join(required)}")


def _text(item: dict, key: str, where: str) -> str:
    value = item[key]
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: field '{key}' must be a non-empty string, got {_short(value)}",
                            "write it as text, e.g. license: MIT")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _plain(value: Any) -> Any:
    """Mapping proxies -> dicts, recursively, for JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
