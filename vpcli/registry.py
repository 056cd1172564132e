"""One registry for everything that is chosen by name: predictors, segmenters, flow, metrics.

Modules register their builders at import; `ensure_loaded(kind)` imports the package that holds
a kind so that listing and lookup see every entry. A lookup of an unknown name raises UsageError
listing the valid names (and the closest one).
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from vpcli.errors import UsageError

KINDS = ("predictor", "segmenter", "flow", "metric")
_PACKAGES = {"predictor": "vpcli.predictors", "segmenter": "vpcli.preprocess.deeplab",
             "flow": "vpcli.preprocess", "metric": "vpcli.metrics"}


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    builder: Callable[..., Any]
    config_cls: type | None = None
    description: str = ""


_REGISTRY: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}


def register(kind: str, name: str, *, config_cls: type | None = None, description: str = ""):
    """Decorator: ``@register("predictor", "slamp", config_cls=SLAMPConfig)``."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; expected one of {KINDS}")

    def deco(builder):
        if name in _REGISTRY[kind] and _REGISTRY[kind][name].builder is not builder:
            raise ValueError(f"{kind} {name!r} is registered twice")
        _REGISTRY[kind][name] = Entry(kind, name, builder, config_cls, description)
        return builder
    return deco


def ensure_loaded(kind: str) -> None:
    importlib.import_module(_PACKAGES[kind])


def names(kind: str) -> list[str]:
    ensure_loaded(kind)
    return sorted(_REGISTRY[kind])


def get(kind: str, name: str) -> Entry:
    ensure_loaded(kind)
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        valid = sorted(_REGISTRY[kind])
        close = difflib.get_close_matches(name, valid, n=1)
        hint = (f"did you mean {close[0]!r}? " if close else "") + f"valid: {', '.join(valid) or '(none yet)'}"
        raise UsageError(f"unknown {kind} {name!r}", hint) from None


def create(kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
    return get(kind, name).builder(*args, **kwargs)


def predictor_config(method: str, model: dict[str, Any], *, context: int | None = None,
                     channels: int | None = None) -> Any:
    """The predictor's config dataclass from its ``model`` section, ``context`` / ``channels``
    (the data's) filling those fields when the section does not set them; None when the method
    has no config class. Errors name the dotted ``model.`` key."""
    import dataclasses

    from vpcli.config import from_dict
    entry = get("predictor", method)
    if entry.config_cls is None:
        return None
    names = {f.name for f in dataclasses.fields(entry.config_cls)}
    values = {k: v for k, v in (("context", context), ("channels", channels)) if k in names and v is not None}
    return from_dict(entry.config_cls, {**values, **model}, prefix="model")
