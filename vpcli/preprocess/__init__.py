"""Preprocessing networks and classical algorithms: optical flow (and segmentation).

Flow backends share one interface, :class:`FlowEstimator`, and are chosen by name through the
registry (kind ``"flow"``)::

    from vpcli import registry
    est = registry.create("flow", "dis")                 # OpenCV DIS, preset "medium"
    flow = est.estimate(frames_a, frames_b)              # (N, 2, H, W) float32, a -> b

| name | what | needs weights | module |
|---|---|---|---|
| ``dis`` | OpenCV Dense Inverse Search (Kroeger et al., ECCV 2016) | no | :mod:`vpcli.preprocess.dis` |
| ``farneback`` | OpenCV Farnebaeck polynomial expansion (SCIA 2003) | no | :mod:`vpcli.preprocess.dis` |
| ``pwcnet`` | PWC-Net (Sun et al., CVPR 2018) in plain torch | yes | :mod:`vpcli.preprocess.pwcnet` |

Importing this package stays cheap (numpy only): the builders below import OpenCV or torch
when a backend is created, not when the registry lists names.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vpcli.errors import DataFormatError
from vpcli.registry import register

__all__ = ["FlowEstimator", "as_float_frames", "as_uint8_frames"]


# --------------------------------------------------------------------------------------------
# The flow interface


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def as_uint8_frames(x: Any) -> np.ndarray:
    """Frames as ``uint8 (N, H, W, 3)`` RGB (or ``(N, H, W)`` grey) numpy, the IO-boundary layout.

    Accepts numpy ``uint8 (N, H, W, 3)`` / ``(N, H, W)``, numpy float in [0, 1] in the same
    layouts, or a torch float tensor ``(N, 3, H, W)`` in [0, 1] (the model layout).
    """
    if _is_torch(x):
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise DataFormatError(f"torch frames must be (N, 3, H, W) floats in [0, 1], got shape {tuple(x.shape)}",
                                  "pass numpy uint8 (N, H, W, 3) frames or torch (N, 3, H, W) in [0, 1]")
        x = (x.detach().float().clamp(0, 1) * 255).round().to("cpu").permute(0, 2, 3, 1).numpy()  # NCHW -> NHWC
        x = x[..., 0] if x.shape[-1] == 1 else x
        return np.ascontiguousarray(x, dtype=np.uint8)
    x = np.asarray(x)
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] != 3):
        raise DataFormatError(f"numpy frames must be (N, H, W, 3) RGB or (N, H, W) grey, got shape {x.shape}",
                              "stack frames along a new first axis")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    raise DataFormatError(f"frames must be uint8 or float in [0, 1], got dtype {x.dtype}", "convert to uint8")


def as_float_frames(x: Any, device: Any = "cpu"):
    """Frames as a torch ``float32 (N, 3, H, W)`` tensor in [0, 1] (the model layout) on ``device``."""
    import torch

    if _is_torch(x):
        if x.ndim != 4 or x.shape[1] != 3:
            raise DataFormatError(f"torch frames must be (N, 3, H, W) floats in [0, 1], got shape {tuple(x.shape)}",
                                  "pass numpy uint8 (N, H, W, 3) frames or torch (N, 3, H, W) in [0, 1]")
        return x.to(device=device, dtype=torch.float32)
    u8 = as_uint8_frames(x)
    if u8.ndim == 3:  # grey (N, H, W) -> RGB
        u8 = np.repeat(u8[..., None], 3, axis=-1)
    t = torch.from_numpy(np.ascontiguousarray(u8)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)  # (N, H, W, 3) -> (N, 3, H, W)


class FlowEstimator:
    """Dense optical flow for batches of frame pairs: ``estimate(frames_a, frames_b)``.

    Inputs, either of:

    - numpy ``uint8 (N, H, W, 3)`` RGB frames (the IO layout; float in [0, 1] and ``(N, H, W)``
      grey are accepted too), or one ``(H, W, 3)`` frame per argument;
    - a torch ``float (N, 3, H, W)`` tensor in [0, 1] (the model layout), or one ``(3, H, W)``.

    Output: flow from ``frames_a[i]`` to ``frames_b[i]``, ``float32 (N, 2, H, W)``, ``(u, v)`` in
    pixels, x right, y down (DESIGN.md): the content at pixel ``x`` of ``a`` is at ``x + flow(x)``
    in ``b``. The output type follows the input: numpy in, numpy out; torch in, a torch tensor on
    the input's device. A single pair in gives ``(2, H, W)`` out.

    Subclasses set ``name`` and ``input_kind`` (``"uint8"``: they receive numpy
    ``uint8 (N, H, W, 3)``; ``"torch"``: a float tensor ``(N, 3, H, W)`` in [0, 1]) and implement
    ``_estimate(a, b)`` returning ``(N, 2, H, W)`` float32 (numpy or torch), and ``describe()``.
    """

    name: str = "flow"
    input_kind: str = "uint8"

    def estimate(self, frames_a: Any, frames_b: Any):
        torch_in = _is_torch(frames_a)
        if torch_in != _is_torch(frames_b):
            raise DataFormatError("frames_a and frames_b must both be numpy arrays or both torch tensors")
        single = (frames_a.ndim == 3 and (frames_a.shape[0] == 3 if torch_in else frames_a.shape[-1] == 3))
        if single:
            frames_a, frames_b = frames_a[None], frames_b[None]
        if tuple(frames_a.shape) != tuple(frames_b.shape):
            raise DataFormatError(f"frames_a {tuple(frames_a.shape)} and frames_b {tuple(frames_b.shape)} differ in shape",
                                  "flow needs pairs of frames of one size")
        if self.input_kind == "torch":
            device = getattr(self, "device", "cpu")
            a, b = as_float_frames(frames_a, device), as_float_frames(frames_b, device)
        else:
            a, b = as_uint8_frames(frames_a), as_uint8_frames(frames_b)
        flow = self._estimate(a, b)
        if torch_in:
            import torch
            flow = (flow if _is_torch(flow) else torch.from_numpy(flow)).to(frames_a.device, torch.float32)
        elif _is_torch(flow):
            flow = flow.detach().float().cpu().numpy()
        else:
            flow = np.asarray(flow, dtype=np.float32)
        return flow[0] if single else flow

    __call__ = estimate

    def _estimate(self, a, b):  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The backend's name and parameters (what meta.json records)."""
        return {"method": self.name}


# --------------------------------------------------------------------------------------------
# Registered builders (lazy: OpenCV / torch are imported when a backend is created)


@register("flow", "dis", description="OpenCV DIS (Dense Inverse Search), preset medium; fast, no weights")
def _build_dis(**kwargs: Any) -> FlowEstimator:
    from vpcli.preprocess.dis import DISFlow
    return DISFlow(**kwargs)


@register("flow", "farneback", description="OpenCV Farnebaeck polynomial-expansion flow; no weights")
def _build_farneback(**kwargs: Any) -> FlowEstimator:
    from vpcli.preprocess.dis import FarnebackFlow
    return FarnebackFlow(**kwargs)


@register("flow", "pwcnet", description="PWC-Net (Sun et al. 2018), plain torch; bundled pwcnet-slim-synth or converted sniklaus weights")
def _build_pwcnet(**kwargs: Any) -> FlowEstimator:
    from vpcli.preprocess.pwcnet import PWCNetFlow
    return PWCNetFlow(**kwargs)
