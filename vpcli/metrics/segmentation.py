"""Intersection-over-union of predicted vs ground-truth label maps.

The standard confusion-matrix definition (Cityscapes, Pascal VOC): with ``cm[g, p]`` the number of
pixels of true class ``g`` predicted as ``p``, the IoU of class ``k`` is
``cm[k, k] / (sum_p cm[k, p] + sum_g cm[g, k] - cm[k, k])`` = TP / (TP + FP + FN). Pixels whose
ground truth is ``ignore_index`` (255) are left out entirely. A prediction of ``ignore_index``
on a valid pixel counts as a miss (a false negative of the true class, a false positive of none).

mIoU is the mean over the classes *present* — those with a non-empty union, i.e. that occur in
the ground truth or in the prediction; an absent class has an undefined IoU (``nan``), not 0 or 1.
``classes=`` restricts the mean to a subset while the IoUs still come from the full confusion
matrix (a road pixel predicted as car is a false positive for car). HVP (Lee et al. 2021, Table 3,
following Luc et al. 2018) reports mIoU "only for moving objects": the 8 Cityscapes classes
person, rider, car, truck, bus, train, motorcycle, bicycle (train ids 11-18),
:data:`HVP_MOVING_CLASSES`.

Two ways to aggregate, both provided:

- :func:`miou` returns the per-frame mIoU ``(B, T)`` (for per-step curves and best-of-N);
- :class:`MIoU` also accumulates one dataset-level confusion matrix across calls
  (:meth:`MIoU.update` / :meth:`MIoU.compute`), which is how Cityscapes-style benchmarks
  compute mIoU.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from vpcli.errors import DataFormatError
from vpcli.metrics._checks import _shape, check_labels

IGNORE_INDEX = 255
CITYSCAPES_NUM_CLASSES = 19
# Cityscapes train ids of the moving-object classes HVP (Table 3) and F2F evaluate on.
HVP_MOVING_CLASSES = (11, 12, 13, 14, 15, 16, 17, 18)
HVP_MOVING_CLASS_NAMES = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")


def _check_pair(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index {ignore_index} collides with a class id (num_classes={num_classes})")
    pred = check_labels(pred, "pred")
    target = check_labels(target, "target")
    if pred.shape != target.shape:
        raise DataFormatError(f"pred and target label shapes differ: pred {_shape(pred)} vs target {_shape(target)}",
                              "compare label maps of the same length and size (B,T,H,W)")
    for name, x in (("pred", pred), ("target", target)):
        bad = ((x < 0) | (x >= num_classes)) & (x != ignore_index)
        if bool(bad.any()):
            value = int(x[bad][0])
            raise DataFormatError(f"{name} holds class id {value}, outside 0..{num_classes - 1} "
                                  f"(and not the ignore id {ignore_index})",
                                  "pass the right num_classes, or map unknown classes to the ignore id")
    return pred.long(), target.long()


def _frame_confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int
                     ) -> torch.Tensor:
    """Per-frame confusion ``(B, T, K, K+1)``: rows true class, columns predicted class.

    The extra last column counts valid pixels predicted as ``ignore_index`` (misses).
    """
    b, t = target.shape[:2]
    k = num_classes
    valid = target != ignore_index  # B,T,H,W
    p = torch.where(pred == ignore_index, torch.full_like(pred, k), pred)
    frame = torch.arange(b * t, device=target.device).view(b, t, 1, 1).expand_as(target)
    index = (frame * k + target) * (k + 1) + p  # one bin per (frame, true, pred)
    counts = torch.bincount(index[valid], minlength=b * t * k * (k + 1))
    return counts.view(b, t, k, k + 1)


def iou_from_confusion(cm: torch.Tensor) -> torch.Tensor:
    """Per-class IoU from a confusion matrix ``(..., K, K)`` or ``(..., K, K+1)``; ``nan`` where absent."""
    k = cm.shape[-2]
    cm = cm.double()
    tp = torch.diagonal(cm[..., :k, :k], dim1=-2, dim2=-1)
    union = cm.sum(dim=-1) + cm[..., :k].sum(dim=-2) - tp  # row (true) + column (pred) - TP
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def _mean_present(iou: torch.Tensor, classes: Sequence[int] | None) -> torch.Tensor:
    if classes is not None:
        iou = iou[..., list(classes)]
    present = ~torch.isnan(iou)
    total = torch.where(present, iou, torch.zeros_like(iou)).sum(dim=-1)
    n = present.sum(dim=-1)
    return torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, float("nan")))


def _check_classes(classes: Sequence[int] | None, num_classes: int) -> tuple[int, ...] | None:
    if classes is None:
        return None
    classes = tuple(int(c) for c in classes)
    if not classes or any(not 0 <= c < num_classes for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct ids in 0..{num_classes - 1}, got {classes!r}")
    return classes


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, *,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Confusion matrix ``(K, K)`` int64 over all frames (rows true, columns predicted)."""
    pred, target = _check_pair(pred, target, num_classes, ignore_index)
    return _frame_confusion(pred, target, num_classes, ignore_index).sum(dim=(0, 1))[:, :num_classes]


def per_class_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, *,
                  ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-frame, per-class IoU ``(B, T, K)`` float64; ``nan`` for classes absent from a frame."""
    pred, target = _check_pair(pred, target, num_classes, ignore_index)
    return iou_from_confusion(_frame_confusion(pred, target, num_classes, ignore_index))


def miou(pred: torch.Tensor, target: torch.Tensor, num_classes: int = CITYSCAPES_NUM_CLASSES, *,
         ignore_index: int = IGNORE_INDEX, classes: Sequence[int] | None = None) -> torch.Tensor:
    """Per-frame mIoU ``(B, T)`` float32 of ``B,T,H,W`` label maps.

    The mean runs over the classes (of ``classes``, default all) present in the frame's ground
    truth or prediction; a frame where none is present gives ``nan``.
    """
    classes = _check_classes(classes, num_classes)
    iou = per_class_iou(pred, target, num_classes, ignore_index=ignore_index)
    return _mean_present(iou, classes).float()


class MIoU:
    """Per-frame mIoU on call, plus a dataset-level confusion matrix accumulated across calls.

    ``MIoU(num_classes=19, classes=HVP_MOVING_CLASSES)``; ``m(pred, target) -> (B, T)`` also adds
    the frames to the running confusion matrix unless ``accumulate=False``; ``m.compute()``
    returns ``{"per_class": (K,) float64 with nan for absent classes, "miou": float}``.
    """

    name = "miou"
    kind = "label"
    higher_is_better = True

    def __init__(self, num_classes: int = CITYSCAPES_NUM_CLASSES, *, ignore_index: int = IGNORE_INDEX,
                 classes: Sequence[int] | str | None = None, accumulate: bool = True):
        if classes == "hvp-moving":
            classes = HVP_MOVING_CLASSES
        elif isinstance(classes, str):
            raise ValueError(f"classes must be a list of ids or 'hvp-moving', got {classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.classes = _check_classes(classes, num_classes)
        self.accumulate = accumulate
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.int64)

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = _check_pair(pred, target, self.num_classes, self.ignore_index)
        cm = _frame_confusion(pred, target, self.num_classes, self.ignore_index)  # B,T,K,K+1
        if self.accumulate:
            self.confusion += cm.sum(dim=(0, 1)).cpu()
        return _mean_present(iou_from_confusion(cm), self.classes).float()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = _check_pair(pred, target, self.num_classes, self.ignore_index)
        self.confusion += _frame_confusion(pred, target, self.num_classes, self.ignore_index).sum(dim=(0, 1)).cpu()

    def compute(self) -> dict[str, object]:
        iou = iou_from_confusion(self.confusion)
        return {"per_class": iou, "miou": float(_mean_present(iou, self.classes))}
