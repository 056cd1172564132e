"""Read a ``torch.save`` file of whole pickled modules without running anything from it.

Some publishers (kaanakan/slamp's ``train.py``: ``torch.save(models)``, a dict of whole
``nn.Module`` objects plus an argparse Namespace) ship checkpoints that ``torch.load(weights_only=True)``
refuses, and that plain unpickling would turn into arbitrary code execution: a pickle can name
any importable callable and call it (``os.system`` through ``__reduce__``). DESIGN.md: nothing
unpickles an untrusted file. This module reads such files anyway, safely:

* torch's own container readers do the file format (the zip of ``torch.save`` since PyTorch 1.6,
  and the legacy stream of magic number, sys info, pickle and raw storages that PyTorch 1.4
  wrote), through ``torch.load(pickle_module=...)`` with :class:`RestrictedUnpickler` below;
* every name the pickle asks for goes through :meth:`RestrictedUnpickler.find_class`: an
  allow-list of *builders* — torch's tensor / parameter rebuild functions (wrapped so that hooks
  and metadata from the file are dropped), ``OrderedDict``, ``set``, ``torch.device``, dtypes,
  numpy scalars (decoded by us), the bytes codec of protocol 2 — and, for every other name, a
  **stub class** made here (``torch.nn.modules.conv.Conv2d``, ``argparse.Namespace``, the
  publisher's ``models.dcgan_64.encoder``, ...): nothing is imported, so the module paths of the
  publisher's code (which its released version may not even match) need not be known;
* a stub class may be *instantiated* the way pickle restores objects (``NEWOBJ`` / ``BUILD``:
  ``object.__new__`` and a stored ``__dict__``) but never *called*: calling one (``REDUCE``, what
  a ``__reduce__`` payload does) raises before anything runs. Names from modules that only a
  payload would use (``os``, ``builtins``, ``subprocess``, ...) are refused at once, for a clearer
  message.

:func:`load_restricted` returns plain data: dicts, lists, tuples, numbers, strings, tensors and
:class:`Stub` instances (their ``__dict__`` is what the pickle stored); :func:`module_state_dict`
turns a stubbed ``nn.Module`` back into a state dict.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from collections import OrderedDict
from typing import Any

import torch

from vpcli.errors import InputError

# Top-level modules that no checkpoint needs a name from: refused outright (anything else that is
# not on the allow-list becomes an inert stub that may be restored but never called).
DENIED_MODULES = frozenset({
    "os", "posix", "nt", "builtins", "__builtin__", "sys", "subprocess", "shutil", "socket", "importlib", "runpy",
    "pickle", "_pickle", "marshal", "types", "code", "codeop", "ctypes", "io", "_io", "functools", "operator",
    "webbrowser", "pty", "platform", "signal", "threading", "multiprocessing", "asyncio", "inspect", "pdb",
    "tempfile", "pathlib", "glob", "urllib", "http", "ftplib", "smtplib", "zipimport", "pkgutil", "site",
    "codecs", "_codecs", "copyreg", "copy_reg", "torch", "numpy", "collections", "_posixsubprocess",
})
# ... except the classes of a model and its optimiser, which are stubbed like any other class.
STUBBED_UNDER_DENIED = ("torch.nn.modules.", "torch.optim.")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RefusedPickle(pickle.UnpicklingError):
    """The file asked for something outside the allow-list (nothing from it was run)."""


class _StubMeta(type):
    def __call__(cls, *args, **kwargs):  # REDUCE on a stub class: the file wants to call it
        raise RefusedPickle(f"refusing to call {cls.__qualname__} from the file (a stubbed class is only restored, "
                            f"never called)")

    def __repr__(cls) -> str:
        return f"<stub {cls.__qualname__}>"


class Stub(metaclass=_StubMeta):
    """An object of a class the file names but vpcli does not import; ``__dict__`` holds its state."""

    _stub_module: str = ""
    _stub_name: str = ""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state, slots = state
            if isinstance(slots, dict):
                self.__dict__.update(slots)
        if isinstance(state, dict):
            self.__dict__.update(state)
        elif state is not None:
            self.__dict__["_stub_state"] = state

    def __repr__(self) -> str:
        return f"<stub {type(self)._stub_module}.{type(self)._stub_name}>"


_stub_classes: dict[tuple[str, str], type] = {}


def stub_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _stub_classes:
        cls = _StubMeta(name, (Stub,), {"_stub_module": module, "_stub_name": name, "__module__": __name__,
                                        "__qualname__": f"{module}.{name}"})
        _stub_classes[key] = cls
    return _stub_classes[key]


def is_stub(obj: Any, module: str | None = None, name: str | None = None) -> bool:
    if not isinstance(obj, Stub):
        return False
    t = type(obj)
    return (module is None or t._stub_module == module) and (name is None or t._stub_name == name)


# --- the allow-list of builders --------------------------------------------------------------

def _check_tensor_args(storage, offset, size, stride) -> None:
    if not isinstance(storage, torch.storage.TypedStorage) or not isinstance(offset, int) or \
            not all(isinstance(v, int) for v in (*size, *stride)):
        raise RefusedPickle("a tensor record with unexpected arguments")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    # Hooks and metadata from the file are dropped: a hook is a callable the file chose.
    _check_tensor_args(storage, storage_offset, size, stride)
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, tuple(size), tuple(stride), False, OrderedDict())


def _rebuild_tensor(storage, storage_offset, size, stride):
    _check_tensor_args(storage, storage_offset, size, stride)
    return torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not torch.is_tensor(data):
        raise RefusedPickle("a parameter record without a tensor")
    return data  # a plain tensor: vpcli only reads the values


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    # Protocol 2 writes Python 3 bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise RefusedPickle("an unexpected _codecs.encode record")
    return text.encode("latin1")


class _NumpyDtype:
    """numpy.dtype(...) as pickled: the type string only (decoded by :func:`_numpy_scalar`)."""

    def __init__(self, kind="f8", align=False, copy=True):
        if not isinstance(kind, str):
            raise RefusedPickle("an unexpected numpy dtype record")
        self.kind = kind

    def __setstate__(self, state):
        self.state = state  # (version, byte order, ...): only the byte order matters below
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.order = state[1]


def _numpy_scalar(dtype, data=None):
    import numpy as np

    if not isinstance(dtype, _NumpyDtype) or not isinstance(data, bytes) or dtype.kind[:1] not in "biuf":
        return None  # a placeholder: vpcli never needs numpy scalars from a checkpoint
    np_dtype = np.dtype(dtype.kind).newbyteorder(getattr(dtype, "order", "=") if dtype.kind[:1] != "b" else "=")
    return np.frombuffer(data, dtype=np_dtype)[0].item()


def _torch_device(*args):
    if not all(isinstance(a, (str, int)) for a in args):
        raise RefusedPickle("an unexpected torch.device record")
    return torch.device(*args)


def _none(*args, **kwargs):
    return None


def _reconstructor(cls, base, state):
    # copyreg._reconstructor (protocols 0 and 1): only for stub classes, as object.__new__
    if isinstance(cls, _StubMeta) and base is object and state is None:
        return object.__new__(cls)
    raise RefusedPickle("an unexpected copyreg._reconstructor record")


_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}

ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("torch", "device"): _torch_device,
    ("torch", "Size"): torch.Size,
    ("numpy", "dtype"): _NumpyDtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    # PyTorch <= 1.4 modules carry `_backend = thnn_backend`, pickled as a call of this function.
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _none,
}


class RestrictedUnpickler(pickle.Unpickler):
    """``find_class``: the allow-list; refusal for denied modules; an inert stub for anything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and name in _DTYPES:
            return getattr(torch, name)
        denied = module.split(".")[0] in DENIED_MODULES and not module.startswith(STUBBED_UNDER_DENIED)
        if denied or not _IDENTIFIER.fullmatch(name) or \
                not all(_IDENTIFIER.fullmatch(part) for part in module.split(".")):
            raise RefusedPickle(f"refusing {module}.{name}: the file names a callable outside vpcli's allow-list "
                                f"(tensors and plain containers; model classes become inert stubs)")
        return stub_class(module, name)


class _PickleModule:
    """What ``torch.load(pickle_module=...)`` needs: ``Unpickler`` and ``load``."""

    __name__ = "vpcli.weights.unpickle"
    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(f, **kwargs):
        return RestrictedUnpickler(f, **kwargs).load()


def load_restricted(path: str | os.PathLike | io.BufferedIOBase) -> Any:
    """The content of a ``torch.save`` file (zip or legacy), with model classes stubbed.

    Raises :class:`~vpcli.errors.InputError` when the file asks for anything outside the
    allow-list (naming what it asked for) or is not a torch checkpoint.
    """
    where = str(path) if isinstance(path, (str, os.PathLike)) else "the checkpoint"
    try:
        with warnings.catch_warnings(record=True):  # "Couldn't retrieve source code for container" (stubs)
            warnings.simplefilter("always")
            return torch.load(path, map_location="cpu", pickle_module=_PickleModule, weights_only=False)
    except RefusedPickle as e:
        raise InputError(f"{where}: {e}; nothing from the file was run",
                         "this is not a checkpoint vpcli can read safely; get the file from its publisher again") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{where} is not a readable PyTorch checkpoint: {' '.join(str(e).split())[:160]}",
                         "download it again; a truncated or replaced file cannot be read") from None


def module_state_dict(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict of a stubbed ``nn.Module`` (parameters and persistent buffers, recursively),
    read from the ``_parameters`` / ``_buffers`` / ``_modules`` the pickle stored."""
    state = getattr(obj, "__dict__", {})
    out: dict[str, torch.Tensor] = {}
    skip = state.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for key, value in (state.get(kind) or {}).items():
            if value is None or (kind == "_buffers" and key in skip):
                continue
            if not torch.is_tensor(value):
                raise InputError(f"{prefix}{key} is not a tensor in the checkpoint", None)
            out[f"{prefix}{key}"] = value
    for key, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(module_state_dict(child, f"{prefix}{key}."))
    return out


def plain(obj: Any, depth: int = 0) -> Any:
    """Stubs -> dicts of their plain fields (for an argparse Namespace saved beside the model)."""
    if depth > 8:
        return None
    if isinstance(obj, Stub):
        return {k: plain(v, depth + 1) for k, v in obj.__dict__.items() if not k.startswith("_")}
    if isinstance(obj, _StubMeta):
        return f"{obj._stub_module}.{obj._stub_name}"
    if isinstance(obj, dict):
        return {str(k): plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v, depth + 1) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


__all__ = ["ALLOWED", "RefusedPickle", "RestrictedUnpickler", "Stub", "is_stub", "load_restricted",
           "module_state_dict", "plain", "stub_class"]

