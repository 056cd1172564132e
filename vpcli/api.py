"""Library functions behind the CLI: segment, estimate_flow, predict, train, evaluate, data tools.

The typed face of the engine: each function takes its inputs, an output folder and one options
object declared (and validated) once, in the engine module that does the work -- the CLI builds
the options from its flags, a library user builds them in Python. Records come back as plain
dicts. Engines that are not in this build yet raise :class:`NotAvailableError` (exit code 2)
naming what is missing, instead of producing pretend output.

Importing this module stays cheap (no torch, no video decoders): the engine modules are imported
when a function runs, and the option classes on first access (``api.SegmentOptions``).
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vpcli.engine.export import WEIGHTS_FORMATS, convert_weights, export_weights
from vpcli.errors import NotAvailableError

if TYPE_CHECKING:
    from vpcli.engine.data_tools import ConvertOptions
    from vpcli.engine.evaluate import EvalOptions
    from vpcli.engine.flow_runner import FlowOptions
    from vpcli.engine.segment_runner import SegmentOptions
    from vpcli.engine.predict_runner import PredictOptions
    from vpcli.engine.train_runner import TrainOptions

__all__ = ["SegmentOptions", "TrainOptions", "PredictOptions", "FlowOptions", "ConvertOptions", "EvalOptions", "WEIGHTS_FORMATS", "segment",
           "estimate_flow", "predict", "train", "evaluate", "data_info", "convert", "data_split", "export_weights",
           "convert_weights"]

Callback = Callable[[str, dict[str, Any]], None]
ForEach = Callable[[list, Callable[[Any], dict[str, Any]]], Any]

# Option classes served lazily from the engine modules that declare them (see module docstring).
_OPTIONS = {"SegmentOptions": "vpcli.engine.segment_runner", "FlowOptions": "vpcli.engine.flow_runner",
            "ConvertOptions": "vpcli.engine.data_tools", "EvalOptions": "vpcli.engine.evaluate",
            "TrainOptions": "vpcli.engine.train_runner", "PredictOptions": "vpcli.engine.predict_runner"}


def __getattr__(name: str) -> Any:
    if name in _OPTIONS:
        return getattr(importlib.import_module(_OPTIONS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _threads() -> None:
    """Apply the thread count the CLI (or VPCLI_THREADS) chose to torch: see `vpcli.threads`."""
    from vpcli import threads
    threads.apply_to_torch()


def _missing(command: str, what: str) -> NotAvailableError:
    return NotAvailableError(f"vpcli {command}: {what} is not implemented in vpcli yet",
                             "see README.md 'Status' for what this build can do")


def _runner(module: str, command: str, what: str):
    """The engine module behind a command, or NotAvailableError while it does not exist."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise _missing(command, what) from None


def segment(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, options: SegmentOptions | None = None, *,
            callback: Callback | None = None, for_each: ForEach | None = None) -> Any:
    """DeepLabV3+ label maps for every input into ``out/<name>/``.

    ``for_each(items, fn)`` runs ``fn`` on each ``(path, name)`` item and its result is returned
    (default: every input attempted, one record per input). See
    `vpcli.engine.segment_runner.segment`.
    """
    _threads()
    from vpcli.engine.segment_runner import segment as run
    return run(inputs, out, options, callback=callback, for_each=for_each)


def estimate_flow(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, options: FlowOptions | None = None,
                  *, callback: Callback | None = None, for_each: ForEach | None = None) -> Any:
    """Optical flow (DIS, Farneback, PWC-Net) for every input into ``out/<name>/``.

    ``for_each`` as in :func:`segment` (default: in order, raising the first error). See
    `vpcli.engine.flow_runner.estimate_flow`.
    """
    _threads()
    from vpcli.engine.flow_runner import estimate_flow as run
    return run(inputs, out, options, callback=callback, for_each=for_each)


def predict(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, options: PredictOptions | None = None, *,
            callback: Callback | None = None, for_each: ForEach | None = None) -> Any:
    """Future frames (and labels, flow, extras: whatever the method predicts) of every input clip
    into ``out/<name>/``. ``for_each`` as in :func:`segment`. See
    `vpcli.engine.predict_runner.predict`."""
    _threads()
    run = _runner("vpcli.engine.predict_runner", "predict", "the prediction engine").predict
    return run(inputs, out, options, callback=callback, for_each=for_each)


def evaluate(options: EvalOptions, *, callback: Callback | None = None) -> dict[str, Any]:
    """Score predictions on disk or a predictor's samples (best of N) into ``options.out``.

    ``options`` says what and how (:class:`EvalOptions`: ``pred``/``gt`` folders, or
    ``method``/``weights``/``data``; metrics; output). Returns the results.json record plus
    ``out``. See `vpcli.engine.evaluate.run_evaluation`.
    """
    _threads()
    from vpcli.engine.evaluate import run_evaluation as run
    return run(options, callback=callback)


# --- data tools -------------------------------------------------------------------------------
def data_info(inputs: Sequence[str | os.PathLike], *, recursive: bool = False,
              shard: str | tuple[int, int] | None = None, for_each: ForEach | None = None) -> Any:
    """Frames, size, fps and codec of every input, without decoding (`vpcli.engine.data_tools`)."""
    from vpcli.engine.data_tools import data_info as run
    return run(inputs, recursive=recursive, shard=shard, for_each=for_each)


def convert(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, options: ConvertOptions | None = None, *,
            callback: Callback | None = None, for_each: ForEach | None = None) -> Any:
    """Re-encode every input into ``out/<name>/`` (MP4, lossless MKV, GIF or PNG frames)."""
    from vpcli.engine.data_tools import convert as run
    return run(inputs, out, options, callback=callback, for_each=for_each)


def data_split(folder: str | os.PathLike, out: str | os.PathLike, fractions: str = "0.8,0.1,0.1", *,
               overwrite: bool = False) -> dict[str, Any]:
    """Write ``train.txt``, ``val.txt``, ``test.txt`` for the clips in ``folder`` into ``out``."""
    from vpcli.engine.data_tools import data_split as run
    return run(Path(folder), Path(out), fractions, overwrite=overwrite)


# --- training ---------------------------------------------------------------------------------
def train(options: TrainOptions, *, callback: Callback | None = None) -> dict[str, Any]:
    """Train ``options.method`` into the run folder ``options.out`` (or continue ``options.resume``
    exactly); returns the trainer's summary. See `vpcli.engine.train_runner.train`."""
    _threads()
    from vpcli.engine.train_runner import train as run
    return run(options, callback=callback)
