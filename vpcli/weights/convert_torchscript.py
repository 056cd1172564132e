"""Parameters out of a TorchScript archive, without running it; the FVD I3D key map.

The field's PyTorch FVD (StyleGAN-V ``src/metrics/frechet_video_distance.py``, and the
``fvd/styleganv`` copy in JunyaoHu/common_metrics_on_video_quality) evaluates
``i3d_torchscript.pt``, a TorchScript port of the TF-Hub I3D, through ``torch.jit.load``. That
call compiles and runs the Python-like code stored in the archive (``code/__torch__/*.py``), so
vpcli never makes it (DESIGN.md: nothing from a downloaded file is executed).

Why not ``torch.load(weights_only=True)``: torch.load recognises a TorchScript archive and
refuses ``weights_only=True`` for it ("Cannot use weights_only=True with TorchScript archives");
without the flag it dispatches to ``torch.jit.load``. So :func:`read_torchscript_tensors` reads the
zip itself:

- ``<root>/data.pkl`` is a pickle (protocol 2) of the module tree: each module is
  ``GLOBAL __torch__.<qualified class>`` + ``NEWOBJ`` + ``BUILD`` with a dict of its attributes
  (parameters, buffers, submodules, flags); tensors are ``torch._utils._rebuild_tensor_v2`` over
  a persistent id ``('storage', torch.<Type>Storage, key, location, numel)`` whose bytes are the
  zip member ``<root>/data/<key>``;
- the unpickler below resolves ``__torch__.*`` names to inert stub classes that only store the
  attribute dict (nothing is imported), rebuilds tensors with its own function from the raw
  little-endian bytes, allows ``collections.OrderedDict`` (the empty backward-hooks argument)
  and the ``torch.jit._pickle.build_*list`` helpers (replaced by ``list``), and refuses every
  other global, so a ``__reduce__`` payload (``os.system``, ``builtins.eval``, ...) raises
  :class:`~vpcli.errors.WeightsError` before anything is called;
- the code folder, ``constants.pkl`` (tensors baked into code) and ``extra/`` are never read.

The result is a flat ``{"Mixed_4b.b1b.conv3d.weight": tensor, ...}`` like a state dict (module
attribute names joined by ``.``, in pickle order), which :func:`convert_i3d_torchscript` maps onto
:class:`vpcli.metrics.i3d.InceptionI3d`.

The I3D key map. The parameter names inside the published ``i3d_torchscript.pt`` could not be
inspected here (the file cannot be downloaded on the machines vpcli is built on, and the public
code that uses it only calls it: ``detector(x, rescale=..., resize=..., return_features=True)``).
The converter therefore recognises, after stripping any common prefix (a wrapper attribute such
as ``model.`` or ``module.``):

1. the piergiaj/pytorch-i3d naming, which is ours (``Conv3d_1a_7x7.conv3d.weight``,
   ``Mixed_3b.b1b.bn.running_var``, ``logits.conv3d.bias``);
2. the TF-Hub/Sonnet variable names of ``deepmind/i3d-kinetics-400/1`` with ``/`` or ``.`` as
   separator (``Conv3d_1a_7x7/conv_3d/w``, ``.../batch_norm/beta``, ``moving_mean``,
   ``moving_variance``; ``Mixed_3b/Branch_1/Conv3d_0b_3x3``, ``Branch_3/Conv3d_0b_1x1``;
   ``Logits/Conv3d_0c_1x1/conv_3d/{w,b}``; names read from the module's ``variables.index``).
   Sonnet's BatchNorm has no scale (``gamma``), so a missing BN weight is 1; a kernel in TF layout
   ``kT,kH,kW,Cin,Cout`` is transposed to ``Cout,Cin,kT,kH,kW``.

Anything else is refused with the first keys found, so that a user holding the file can report
its layout (``vpcli.weights.convert_torchscript.read_torchscript_tensors(path)`` lists it).
"""
from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from vpcli.errors import WeightsError

__all__ = ["is_torchscript_archive", "read_torchscript_tensors", "convert_i3d_torchscript", "load_i3d_torchscript"]

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_MAX_MEMBER_BYTES = 4 << 30  # no weights file of a metric comes near this; a zip bomb would


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zip with ``<root>/data.pkl`` and ``<root>/code/`` (a TorchScript archive)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return _archive_root(zf) is not None
    except (OSError, zipfile.BadZipFile):
        return False


def _archive_root(zf: zipfile.ZipFile) -> str | None:
    names = zf.namelist()
    for name in names:
        if name.endswith("/data.pkl") and name.count("/") == 1:
            root = name[: -len("data.pkl")]
            if any(n.startswith(root + "code/") for n in names):
                return root
    return None


class _ScriptObject:
    """An inert stand-in for a TorchScript class instance: holds its attributes, runs nothing."""

    qualname = "?"

    def __init__(self) -> None:
        self.attrs: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:  # pickle BUILD
        if not isinstance(state, dict):
            raise WeightsError(f"TorchScript object {self.qualname} has a custom state ({type(state).__name__})",
                               "only plain modules (attributes in a dict) can be read without running the file")
        self.attrs = dict(state)


class _StorageType:
    def __init__(self, name: str):
        self.name, self.dtype = name, _STORAGE_DTYPES[name]


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, requires_grad: bool = False,
                    hooks: Any = None, *metadata: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` over our own 1-D storage tensor (bounds checked by torch)."""
    if not isinstance(storage, torch.Tensor) or storage.ndim != 1:
        raise WeightsError("TorchScript archive: a tensor without a storage", "the file is not a plain TorchScript module")
    try:
        return torch.as_strided(storage, tuple(size), tuple(stride), int(offset))
    except RuntimeError as err:
        raise WeightsError(f"TorchScript archive: a tensor does not fit its storage ({err})",
                           "the file is damaged; download it again") from None


class _ArchiveUnpickler(pickle.Unpickler):
    """Builds module stubs, tensors and plain containers from ``data.pkl``; refuses everything else."""

    def __init__(self, data: bytes, zf: zipfile.ZipFile, root: str, where: str):
        super().__init__(io.BytesIO(data))
        self.zf, self.root, self.where = zf, root, where
        self.stubs: dict[str, type] = {}
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            if qualname not in self.stubs:
                self.stubs[qualname] = type("ScriptObject", (_ScriptObject,), {"qualname": qualname})
            return self.stubs[qualname]
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch.jit._pickle" and name in ("build_intlist", "build_doublelist", "build_boollist",
                                                      "build_tensorlist"):
            return list
        if module == "torch.jit._pickle" and name == "restore_type_tag":
            return lambda value, _tag: value
        raise WeightsError(f"{self.where}: refused to load {module}.{name} from the file's pickle",
                           "vpcli only rebuilds tensors and module attributes; this file wants to call code")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise WeightsError(f"{self.where}: unexpected persistent id {str(pid)[:60]!r}",
                               "the file is not a plain TorchScript module")
        _, stype, key, _location, numel = pid
        key = str(key)
        if key in self.storages:
            return self.storages[key]
        if not re.fullmatch(r"[0-9]+", key):
            raise WeightsError(f"{self.where}: bad storage key {key!r}", "the file is damaged")
        member = f"{self.root}data/{key}"
        try:
            info = self.zf.getinfo(member)
        except KeyError:
            raise WeightsError(f"{self.where}: storage {member} is missing", "the file is damaged or truncated") from None
        itemsize = torch.empty((), dtype=stype.dtype).element_size()
        if info.file_size != int(numel) * itemsize or info.file_size > _MAX_MEMBER_BYTES:
            raise WeightsError(f"{self.where}: storage {member} holds {info.file_size} bytes, expected "
                               f"{int(numel) * itemsize}", "the file is damaged or truncated")
        raw = bytearray(self.zf.read(member))
        tensor = torch.frombuffer(raw, dtype=stype.dtype) if raw else torch.empty(0, dtype=stype.dtype)
        self.storages[key] = tensor
        return tensor


def read_torchscript_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript archive's module tree, as ``{dotted.name: tensor}``.

    Reads ``data.pkl`` and the tensor storages only (see the module docstring); the archive's code
    is never compiled or run. Raises :class:`WeightsError` for anything that is not a plain
    TorchScript module archive.
    """
    path = Path(path)
    where = f"TorchScript archive {path}"
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise WeightsError(f"cannot read {where}: {err}", "expected a TorchScript .pt file (a zip archive)") from None
    with zf:
        root = _archive_root(zf)
        if root is None:
            raise WeightsError(f"{path} is not a TorchScript archive (no <name>/data.pkl and <name>/code/)",
                               "pass the TorchScript file (e.g. i3d_torchscript.pt) or a state dict")
        order = zf.read(f"{root}byteorder").decode().strip() if f"{root}byteorder" in zf.namelist() else "little"
        if order != "little":
            raise WeightsError(f"{where}: byte order {order!r} is not supported", "re-save the file on a little-endian machine")
        unpickler = _ArchiveUnpickler(zf.read(f"{root}data.pkl"), zf, root, where)
        try:
            top = unpickler.load()
        except WeightsError:
            raise
        except Exception as err:  # a malformed pickle: never partially trusted
            raise WeightsError(f"{where}: unreadable data.pkl ({type(err).__name__}: {str(err)[:80]})",
                               "the file is damaged, or not a TorchScript module") from None
    out: dict[str, torch.Tensor] = {}
    _flatten(top, "", out, depth=0)
    if not out:
        raise WeightsError(f"{where} holds no tensors in its module attributes",
                           "a frozen module keeps its weights as code constants, which vpcli does not read")
    return {k: v.clone() for k, v in out.items()}  # own memory, independent of the shared storages


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor], depth: int) -> None:
    if depth > 64:
        raise WeightsError("TorchScript archive: module tree deeper than 64 levels", "the file is not a plain module")
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, _ScriptObject):
        for name, value in getattr(obj, "attrs", {}).items():
            _flatten(value, f"{prefix}{name}.", out, depth + 1)
    elif isinstance(obj, dict):  # a module whose state is the dict itself, or a dict attribute
        for name, value in obj.items():
            if isinstance(name, str):
                _flatten(value, f"{prefix}{name}.", out, depth + 1)


# --- I3D ---------------------------------------------------------------------------------------

# Our (= pytorch-i3d) module names -> TF-Hub / Sonnet scope names.
_TF_BRANCH = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
              "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}
_TF_PARAM = {"conv3d.weight": "conv_3d/w", "conv3d.bias": "conv_3d/b", "bn.bias": "batch_norm/beta",
             "bn.weight": "batch_norm/gamma", "bn.running_mean": "batch_norm/moving_mean",
             "bn.running_var": "batch_norm/moving_variance"}


def _tf_name(key: str) -> str | None:
    """``Mixed_4b.b1b.bn.running_var`` -> ``Mixed_4b/Branch_1/Conv3d_0b_3x3/batch_norm/moving_variance``."""
    parts = key.split(".")
    module, param = parts[:-2], ".".join(parts[-2:])
    if param not in _TF_PARAM:
        return None
    if module == ["logits"]:
        scope = "Logits/Conv3d_0c_1x1"
    elif len(module) == 2 and module[0].startswith("Mixed_") and module[1] in _TF_BRANCH:
        scope = f"{module[0]}/{_TF_BRANCH[module[1]]}"
    elif len(module) == 1:
        scope = module[0]
    else:
        return None
    return f"{scope}/{_TF_PARAM[param]}"


def _strip_prefix(keys: list[str], anchor: str) -> str | None:
    """The prefix in front of ``anchor`` (the first conv's weight in a naming), or None."""
    for k in keys:
        if k == anchor or k.endswith("." + anchor) or k.endswith("/" + anchor):
            return k[: len(k) - len(anchor)]
    return None


def convert_i3d_torchscript(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the tensors of an I3D archive (see :func:`read_torchscript_tensors`) onto
    :class:`~vpcli.metrics.i3d.InceptionI3d`'s state dict, checking every key and shape."""
    from vpcli.metrics.i3d import InceptionI3d

    with torch.device("meta"):  # names, shapes and dtypes only
        reference = InceptionI3d().state_dict()
    keys = list(tensors)
    hint = ("expected an RGB 400-class Inception-I3D (pytorch-i3d or TF-Hub naming); "
            "vpcli.weights.convert_torchscript.read_torchscript_tensors(path) lists the file's keys")
    prefix = _strip_prefix(keys, "Conv3d_1a_7x7.conv3d.weight")
    if prefix is not None:  # 1. pytorch-i3d naming (ours)
        lookup = {k: prefix + k for k in reference}
        layout = "pytorch-i3d"
    else:
        for sep in ("/", "."):
            anchor = "Conv3d_1a_7x7/conv_3d/w".replace("/", sep)
            prefix = _strip_prefix(keys, anchor)
            if prefix is not None:
                break
        if prefix is None:
            raise WeightsError(f"I3D archive: unknown parameter layout ({len(keys)} tensors; first: "
                               f"{', '.join(keys[:6])})", hint)
        lookup = {}
        for k in reference:  # 2. TF-Hub/Sonnet naming
            tf = _tf_name(k)
            if tf is not None:
                lookup[k] = prefix + tf.replace("/", sep)
        layout = "tf-hub"
    out: dict[str, torch.Tensor] = {}
    missing = []
    for key, ref in reference.items():  # tensors the map does not name (a wrapper's buffers) are ignored
        src = lookup.get(key)
        value = tensors.get(src) if src is not None else None
        if value is None:
            if key.endswith("num_batches_tracked"):
                value = torch.zeros((), dtype=torch.int64)
            elif key.endswith("bn.weight") and layout == "tf-hub":
                value = torch.ones(ref.shape)  # Sonnet BatchNorm: offset only, no scale
            else:
                missing.append(src or key)
                continue
        if layout == "tf-hub" and value.ndim == 5 and tuple(value.shape) != tuple(ref.shape) \
                and tuple(value.permute(4, 3, 0, 1, 2).shape) == tuple(ref.shape):
            value = value.permute(4, 3, 0, 1, 2)  # TF kT,kH,kW,Cin,Cout -> torch Cout,Cin,kT,kH,kW
        if tuple(value.shape) != tuple(ref.shape):
            raise WeightsError(f"I3D archive ({layout} naming): {src} has shape {tuple(value.shape)}, expected "
                               f"{tuple(ref.shape)} for {key}", hint)
        out[key] = value.detach().to(ref.dtype).contiguous()
    if missing:
        raise WeightsError(f"I3D archive ({layout} naming): {len(missing)} tensors missing "
                           f"({', '.join(missing[:3])})", hint)
    return out


def load_i3d_torchscript(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Our I3D state dict from a TorchScript I3D archive (e.g. ``i3d_torchscript.pt``), read safely."""
    return convert_i3d_torchscript(read_torchscript_tensors(path))
