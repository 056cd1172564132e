"""Convert the SLAMP authors' checkpoints (github.com/kaanakan/slamp) to vpcli's state dict.

Their ``train.py`` saves ``torch.save(models)`` where ``models`` maps component names to whole
``nn.Module`` objects, plus ``'opt'`` (an argparse Namespace) and ``'epoch'``. Loading that needs
the authors' classes and full unpickling, which vpcli never does on a downloaded file
(DESIGN.md: ``torch.load(weights_only=True)`` only). Re-save it once, inside a checkout of their
repository (so their classes import) and only for a file you trust::

    python -c "import torch; c = torch.load('slamp_mnist.pth', map_location='cpu'); \\
        torch.save({k: v.state_dict() for k, v in c.items() if hasattr(v, 'state_dict')}, 'slamp_mnist.sd.pth')"

Or, without their code: :func:`read_authors_checkpoint` reads the published file itself with
vpcli's restricted unpickler (vpcli/weights/unpickle.py: their module classes become inert stubs,
only tensors and plain containers are built, anything else is refused); the manifest entries
``slamp-*-official`` do that on download (vpcli/weights/convert_on_download.py), and
:func:`check_opt` compares the ``opt`` saved beside the models with the config vpcli builds.

``convert_slamp_official('slamp_mnist.sd.pth')`` then reads it with ``weights_only=True``. A dict
of per-component state dicts (or a flat ``"component.param"`` dict) works directly. From the
command line, with the preset whose model the checkpoint was trained with::

    vpcli weights convert --from slamp-official slamp_mnist.sd.pth --config slamp-mmnist --out slamp-mmnist-official.safetensors

Key mapping (component names are the same on both sides; ``vpcli.predictors.slamp``)::

    <component>.<...>.main.<i>.<p>     -> <component>.<...>.<i>.<p>     dcgan_conv / vgg_layer wrappers
    <component>.<...>.layers.<i>.<p>   -> <component>.<...>.<i>.<p>     KITTI / Cityscapes `conv` wrapper
    <lstm>.lstm.<i>.conv.<p>           -> <lstm>.lstm.<i>.gates.<p>     ConvLSTM cell (same gate order)
    <gaussian conv lstm>.embed.*       -> dropped                       defined but unused in their forward

Every other key is kept as is: ``static_frame_predictor.embed.weight``,
``posterior_app.mu_net.bias``, ``mask_decoder.c1.2.fc.0.weight`` (SE), BatchNorm running
statistics, ... The components are ``pixel_encoder``, ``motion_encoder``, ``img_encoder`` (street
models only), ``pixel_decoder``, ``flow_decoder``, ``mask_decoder``, ``static_frame_predictor``,
``dynamic_frame_predictor``, ``posterior_app``, ``prior_app``, ``posterior_motion``,
``prior_motion``. The SLAMP-Baseline's own names (``frame_predictor``, ``posterior``, ``prior``)
are accepted too, though the authors published no baseline weights.
"""
from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vpcli.errors import InputError

COMPONENTS = ("pixel_encoder", "motion_encoder", "img_encoder", "pixel_decoder", "flow_decoder", "mask_decoder",
              "static_frame_predictor", "dynamic_frame_predictor", "posterior_app", "prior_app",
              "posterior_motion", "prior_motion", "frame_predictor", "posterior", "prior")
_GAUSSIAN = ("posterior_app", "prior_app", "posterior_motion", "prior_motion", "posterior", "prior")
_WRAPPERS = {"main", "layers"}
_CONV_CELL = re.compile(r"^lstm\.(\d+)\.conv\.")
RESAVE_HINT = ("for the published files use the manifest entries slamp-*-official (`vpcli weights download "
               "slamp-kth-official` reads them safely and converts them); otherwise re-save it as state dicts in a "
               "checkout of kaanakan/slamp (recipe in vpcli/weights/convert_slamp.py) and convert that file")


def _load(path: str | os.PathLike) -> Mapping[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist", "pass the path of a SLAMP checkpoint (.pth)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # torch.save's zip container or a legacy pickle
        raise InputError(f"{path} is not a PyTorch checkpoint (neither a torch.save zip nor a pickle)",
                         "pass the .pth file of kaanakan/slamp, re-saved as state dicts (see convert_slamp.py)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a page of advice; the class it refused is what tells the user why.
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        why = f"it holds a {refused[1]}" if refused else re.sub(r"\x1b\[[0-9;]*m", "", str(e).splitlines()[0])[:120]
        raise InputError(f"{path} pickles whole modules or other Python objects (as kaanakan/slamp train.py saves "
                         f"them), which vpcli does not load ({why})", RESAVE_HINT) from None


def _split(src: Mapping[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """Per-component state dicts from either layout; non-tensor entries ('opt', 'epoch') are skipped."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in src.items():
        if isinstance(value, Mapping):
            tensors = {k: v for k, v in value.items() if torch.is_tensor(v)}
            if tensors:
                out.setdefault(str(key), {}).update(tensors)
        elif torch.is_tensor(value):
            comp, _, rest = str(key).partition(".")
            if rest:
                out.setdefault(comp, {})[rest] = value
        elif isinstance(value, torch.nn.Module):  # only reachable when a caller unpickled it themselves
            out[str(key)] = dict(value.state_dict())
    return out


def _rename(component: str, key: str, is_conv_lstm: bool) -> str | None:
    if is_conv_lstm and component in _GAUSSIAN and key.startswith("embed."):
        return None
    key = _CONV_CELL.sub(r"lstm.\1.gates.", key)
    return ".".join(part for part in key.split(".") if part not in _WRAPPERS)


def convert_slamp_official(path_or_dict: str | os.PathLike | Mapping[str, Any], *,
                           model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The authors' per-component state dicts -> a state dict for :class:`~vpcli.predictors.slamp.SLAMP`.

    ``path_or_dict``: a ``.pth`` file holding a dict of state dicts (read with
    ``weights_only=True``; a whole-module pickle raises :class:`~vpcli.errors.InputError` with
    the re-save recipe), or such a dict already in memory. ``model``: when given, the result is
    checked against its state dict (names and shapes) and the differences are reported.
    """
    src = _load(path_or_dict) if isinstance(path_or_dict, (str, os.PathLike)) else path_or_dict
    if not isinstance(src, Mapping):
        raise InputError(f"a SLAMP checkpoint is a dict of components, got {type(src).__name__}", RESAVE_HINT)
    parts = _split(src)
    unknown = sorted(set(parts) - set(COMPONENTS))
    if unknown:
        raise InputError(f"unknown SLAMP component(s) {', '.join(unknown)}",
                         f"expected some of: {', '.join(COMPONENTS)}")
    if not parts:
        raise InputError("the checkpoint holds no SLAMP component state dicts", RESAVE_HINT)
    out: dict[str, torch.Tensor] = {}
    for comp, sd in parts.items():
        conv_lstm = any(_CONV_CELL.match(k) for k in sd)
        for key, value in sd.items():
            new = _rename(comp, key, conv_lstm)
            if new is not None:
                out[f"{comp}.{new}"] = value
    if model is not None:
        check_against(out, model)
    return out


def check_against(state: Mapping[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Raise InputError naming missing / unexpected / mis-shaped keys (at most three of each)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what}: {', '.join(items[:3])}" + (" ..." if len(items) > 3 else "")
                           for what, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
                           if items)
        raise InputError(f"the converted SLAMP weights do not fit this model ({detail})",
                         "build the model with the checkpoint's settings (backbone, channels, g/z dims, rnn_size; "
                         "`vpcli weights convert`: --config PRESET and --set model.KEY=VALUE)")


# --- the published files themselves (whole pickled modules) ------------------------------------

# train.py's `opt` (args.py) -> vpcli's model config: the settings that change what the weights mean.
_OPT_FIELDS = ("channels", "g_dim_app", "g_dim_motion", "z_dim_app", "z_dim_motion", "rnn_size",
               "predictor_rnn_layers", "posterior_rnn_layers", "prior_rnn_layers", "last_frame_skip",
               "running_avg", "motion_skip")


def read_authors_checkpoint(path: str | os.PathLike) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """A kaanakan/slamp ``.pth`` as ``train.py`` writes it (``torch.save(models)`` with ``opt`` and
    ``epoch``) -> (per-component state dicts, ``opt`` as a plain dict).

    Read with :func:`vpcli.weights.unpickle.load_restricted`: nothing from the file is imported
    or called. A file of per-component state dicts is accepted too.
    """
    from vpcli.weights.unpickle import Stub, load_restricted, module_state_dict, plain

    path = Path(path)
    content = load_restricted(path)
    if not isinstance(content, Mapping):
        raise InputError(f"{path}: a SLAMP checkpoint is a dict of components, got {type(content).__name__}",
                         "pass a .pth file of kaanakan/slamp")
    parts: dict[str, dict[str, torch.Tensor]] = {}
    opt: dict[str, Any] = {}
    for key, value in content.items():
        if key == "opt":
            opt = plain(value) if isinstance(value, (Stub, Mapping)) else {}
        elif isinstance(value, Stub):
            parts[str(key)] = module_state_dict(value)
        elif isinstance(value, Mapping):
            tensors = {str(k): v for k, v in value.items() if torch.is_tensor(v)}
            if tensors:
                parts[str(key)] = tensors
    return parts, opt


def check_opt(opt: Mapping[str, Any], config: Any) -> list[str]:
    """The settings in which the checkpoint's ``opt`` and vpcli's model ``config`` disagree, as
    ``"name: checkpoint X, config Y"`` (empty: they agree, or ``opt`` does not say)."""
    out = []
    for name in _OPT_FIELDS:
        if name in opt and hasattr(config, name) and opt[name] != getattr(config, name):
            out.append(f"{name}: checkpoint {opt[name]!r}, config {getattr(config, name)!r}")
    backbone = {"kitti": "kitti", "cityscapes": "cityscapes"}.get(str(opt.get("dataset")))
    if backbone is None and opt.get("model") in ("dcgan", "vgg"):
        backbone = {"dcgan": "dcgan64", "vgg": "vgg64"}[opt["model"]]
    if backbone is not None and getattr(config, "backbone", backbone) != backbone:
        out.append(f"backbone: checkpoint {backbone!r} (dataset {opt.get('dataset')!r}, model {opt.get('model')!r}), "
                   f"config {config.backbone!r}")
    return out
