"""Conversion after download: a manifest entry with ``convert: NAME`` names a publisher's file
format; once the file is fetched and its sha256 checked (resolve.py), it is converted here into
vpcli's safetensors, once, and the converted file is what loads.

Cache layout (under ``$VPCLI_CACHE``, default ``~/.cache/vpcli``)::

    converted/<entry name>-<first 16 hex of the original's sha256>/
        <entry name>.safetensors        the converted weights
        conversion.json                 {name, converter, converter_version, source_sha256,
                                         sha256 (of the .safetensors), tensors, bytes, converted, vpcli}

The folder is named after the original's hash, so a new upstream file never meets an old
conversion. A cached conversion is used when its record names the same original, converter and
converter version and the file still has the recorded sha256; otherwise it is made again from the
(verified) original. Conversion is deterministic: the same original gives the same bytes.

Converters (``CONVERTERS`` in manifest.py lists the names the manifest accepts):

* ``slamp-official``: kaanakan/slamp's ``.pth`` (whole pickled modules, read with the restricted
  unpickler of unpickle.py), mapped with convert_slamp.py and checked against the model that the
  entry's config builds (names, shapes, and the ``opt`` saved in the file).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vpcli.errors import InputError, WeightsError
from vpcli.weights import hashing

RECORD = "conversion.json"
# Bump when a converter's output changes, so that cached conversions are made again.
CONVERTER_VERSIONS = {"slamp-official": 1}


def converted_dir(entry, source_sha256: str) -> Path:
    return hashing.vpcli_cache_dir() / "converted" / f"{entry.name}-{source_sha256[:16]}"


def conversion_record(entry, source_sha256: str) -> dict[str, Any] | None:
    """The record of the entry's cached conversion of that original, or None."""
    try:
        record = json.loads((converted_dir(entry, source_sha256) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def converted_path(entry, source: Path, source_sha256: str) -> Path:
    """The converted file of ``entry`` made from ``source`` (whose sha256 resolve.py has checked):
    the cached one if it is intact, else converted now (atomically) and recorded."""
    name = entry.convert
    convert = _CONVERTERS.get(name)
    if convert is None:
        raise WeightsError(f"weights '{entry.name}': unknown converter {name!r}", f"fix 'convert' in {entry.manifest}")
    folder = converted_dir(entry, source_sha256)
    dest = folder / f"{entry.name}.safetensors"
    version = CONVERTER_VERSIONS[name]
    record = conversion_record(entry, source_sha256)
    if record and dest.is_file() and record.get("source_sha256") == source_sha256 and \
            record.get("converter") == name and record.get("converter_version") == version and \
            hashing.file_sha256(dest) == record.get("sha256"):
        return dest
    tensors, metadata = convert(entry, source)
    from safetensors.torch import save_file

    from vpcli import __version__
    from vpcli.io.atomic import atomic_path, write_text

    folder.mkdir(parents=True, exist_ok=True)
    hashing.forget(dest)
    # One metadata key: safetensors writes its metadata map in no fixed order, and the same original
    # must give the same bytes.
    meta = {"vpcli_conversion": json.dumps({"name": entry.name, "converter": name, "source_sha256": source_sha256,
                                            **metadata}, sort_keys=True, default=str)}
    with atomic_path(dest) as tmp:
        save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(tmp), metadata=meta)
    sha = hashing.file_sha256(dest, trust_cache=False)
    write_text(folder / RECORD, json.dumps(
        {"name": entry.name, "converter": name, "converter_version": version, "source_sha256": source_sha256,
         "source": str(source), "sha256": sha, "tensors": len(tensors), "bytes": dest.stat().st_size,
         "converted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "vpcli": __version__, **metadata},
        indent=1, default=str) + "\n")
    return dest


# --- converters: (entry, original file) -> (tensors, metadata) -------------------------------

def _model_of(entry) -> tuple[torch.nn.Module, Any]:
    """The (meta-device) model the entry's config builds, and its model config."""
    from vpcli import registry

    base = dict(entry.load_config())
    method, data = base.get("method", entry.arch), base.get("data") or {}
    model_cfg = registry.predictor_config(method, base.get("model") or {}, context=data.get("context"),
                                          channels=data.get("channels"))
    with torch.device("meta"):  # names and shapes only; no memory
        model = registry.get("predictor", method).builder(model_cfg)
    return model, model_cfg


def _slamp_official(entry, source: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from vpcli.weights.convert_slamp import check_opt, convert_slamp_official, read_authors_checkpoint

    model, model_cfg = _model_of(entry)
    parts, opt = read_authors_checkpoint(source)
    differ = check_opt(opt, model_cfg)
    if differ:
        raise InputError(f"weights '{entry.name}': the checkpoint was trained with other settings than the entry's "
                         f"config ({'; '.join(differ[:4])})",
                         f"the manifest entry is wrong: fix its config in {entry.manifest}")
    try:
        tensors = convert_slamp_official(parts, model=model)
    except InputError as e:
        raise InputError(f"weights '{entry.name}' ({source.name}): {e.message}", f"check the entry's config in "
                         f"{entry.manifest}") from None
    seen = {k: opt[k] for k in ("dataset", "model", "n_past", "n_future", "channels") if k in opt}
    return tensors, {"authors_opt": json.dumps(seen, sort_keys=True, default=str)}


_CONVERTERS: dict[str, Callable[[Any, Path], tuple[dict[str, torch.Tensor], dict[str, Any]]]] = {
    "slamp-official": _slamp_official,
}
