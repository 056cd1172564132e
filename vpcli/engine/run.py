"""Run configs: method + data + train + model sections, from presets, YAML files and overrides.

A preset is a YAML file in ``vpcli/presets/`` named ``<method>-<dataset>[-tiny].yaml``; a user
config file has the same shape. Sections:

``method``  the registered predictor name
``data``    :class:`DataConfig` (source, context/future lengths, size, frame step, channels)
``train``   :class:`vpcli.engine.trainer.TrainConfig`
``model``   the predictor's own config dataclass (validated against the registry's entry);
            ``context`` and ``channels`` default to the data section's values
``inputs``  :class:`vpcli.engine.inputs.InputConfig`: where labels / flow come from
            (``companion``, a segmenter, a flow method); recorded in every checkpoint's config
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpcli import registry
from vpcli.config import apply_overrides, from_dict, load_yaml, to_dict
from vpcli.engine.inputs import InputConfig
from vpcli.engine.trainer import TrainConfig
from vpcli.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


@dataclass
class DataConfig:
    source: str = "synthetic:moving-digits"   # a folder of clips, or synthetic:NAME
    context: int = 5
    future: int = 10
    size: tuple[int, int] = (64, 64)          # H, W
    channels: int = 3
    frame_step: int = 1
    train_clips: int = 0                      # synthetic sources: clips per epoch (0 = the generator's default)
    val_clips: int = 16                       # 0 = no validation; folder sources hold out at least one clip
    val_source: str = ""                      # a folder of validation clips (--val); "" = a split of source
    window_stride: int = 0                    # folder sources: frames between window starts (0 = a window's span)

    def __post_init__(self):
        if self.context < 1 or self.future < 1:
            raise ValueError(f"context and future must be >= 1, got {self.context} and {self.future}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.window_stride < 0:
            raise ValueError(f"window_stride must be >= 0, got {self.window_stride}")
        if min(self.size) < 8:
            raise ValueError(f"size must be at least 8x8, got {self.size}")

    @property
    def length(self) -> int:
        return self.context + self.future


@dataclass
class RunConfig:
    method: str
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: dict[str, Any] = field(default_factory=dict)
    inputs: InputConfig = field(default_factory=InputConfig)

    def model_config(self) -> Any:
        """The predictor's config dataclass, with context/channels defaulting to the data's."""
        return registry.predictor_config(self.method, self.model, context=self.data.context,
                                         channels=self.data.channels)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_config_source(config: str | None) -> dict[str, Any]:
    """A preset name or a YAML file path -> its mapping (empty when ``config`` is None)."""
    if config is None:
        return {}
    path = Path(config)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_yaml(path)
    preset = PRESET_DIR / f"{config}.yaml"
    if not preset.exists():
        valid = list_presets()
        close = difflib.get_close_matches(config, valid, n=1)
        raise ConfigError(f"unknown preset {config!r}",
                          (f"did you mean {close[0]!r}? " if close else "") + f"presets: {', '.join(valid)}")
    return load_yaml(preset)


def resolve_config(method: str | None, config: str | None = None, overrides: list[str] = (),
                   base: dict[str, Any] | None = None) -> RunConfig:
    """Build the full RunConfig: ``base`` (or the preset/file) <- --method <- --set overrides."""
    data = dict(base) if base is not None else load_config_source(config)
    if method is not None:
        if data.get("method") not in (None, method):
            raise ConfigError(f"--method {method} does not match the config's method {data['method']!r}",
                              "drop --method or choose a preset of that method")
        data["method"] = method
    if "method" not in data:
        raise ConfigError("no method given", f"pass --method ({', '.join(registry.names('predictor'))}) "
                          "or a --config preset/file that sets it")
    registry.get("predictor", data["method"])  # unknown method -> lists the valid ones
    cfg = from_dict(RunConfig, apply_overrides(data, list(overrides)))
    cfg.model_config()  # validate the model section now, with its dotted key names
    return cfg


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        dotted = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, dotted + ".")
        elif va != vb:
            out.append(dotted)
    return out
