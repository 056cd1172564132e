"""mIoU: a hand-worked example, an independent loop-based confusion matrix, ignore and class subsets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vpcli.errors import DataFormatError
from vpcli.metrics import HVP_MOVING_CLASSES, MIoU
from vpcli.metrics.segmentation import (
    HVP_MOVING_CLASS_NAMES,
    confusion_matrix,
    miou,
    per_class_iou,
)


def test_hand_computed_example():
    # 2x3 frame, 3 classes; one pixel ignored.
    target = torch.tensor([[0, 0, 1], [1, 2, 255]]).view(1, 1, 2, 3)
    pred = torch.tensor([[0, 1, 1], [1, 1, 0]]).view(1, 1, 2, 3)
    # class 0: TP 1, FN 1 (pixel (0,1)), FP 0 (the (1,2) pixel is ignored) -> 1/2
    # class 1: TP 2, FP 2 ((0,1), (1,1)), FN 0 -> 2/4
    # class 2: TP 0, FN 1 -> 0
    iou = per_class_iou(pred, target, 3)[0, 0]
    np.testing.assert_allclose(iou.numpy(), [0.5, 0.5, 0.0])
    assert miou(pred, target, 3).item() == pytest.approx(1 / 3)
    cm = confusion_matrix(pred, target, 3)
    np.testing.assert_array_equal(cm.numpy(), [[1, 1, 0], [0, 2, 0], [0, 1, 0]])


def test_absent_classes_are_left_out_of_the_mean():
    target = torch.tensor([[0, 0], [0, 0]]).view(1, 1, 2, 2)
    pred = torch.tensor([[0, 0], [0, 3]]).view(1, 1, 2, 2)
    iou = per_class_iou(pred, target, 5)[0, 0]
    assert iou[0].item() == pytest.approx(3 / 4) and iou[3].item() == 0.0
    assert math.isnan(iou[1].item()) and math.isnan(iou[2].item()) and math.isnan(iou[4].item())
    assert miou(pred, target, 5).item() == pytest.approx(3 / 8)  # mean of 0.75 (class 0) and 0 (class 3)
    # No class present at all (every pixel ignored) -> nan, not 0 or 1.
    all_ignored = torch.full((1, 1, 2, 2), 255)
    assert math.isnan(miou(pred, all_ignored, 5).item())


def _loop_confusion(pred: np.ndarray, target: np.ndarray, k: int, ignore: int) -> np.ndarray:
    """Independent reference: count pixel by pixel (rows true, columns predicted)."""
    cm = np.zeros((k, k), dtype=np.int64)
    for p, g in zip(pred.ravel(), target.ravel()):
        if g == ignore:
            continue
        cm[g, p] += 1
    return cm


def _loop_iou(cm: np.ndarray) -> np.ndarray:
    out = np.full(cm.shape[0], np.nan)
    for c in range(cm.shape[0]):
        tp = cm[c, c]
        fp = cm[:, c].sum() - tp
        fn = cm[c, :].sum() - tp
        if tp + fp + fn > 0:
            out[c] = tp / (tp + fp + fn)
    return out


def test_matches_independent_confusion_code_per_frame_and_per_dataset():
    rng = np.random.default_rng(0)
    k = 19
    target = rng.integers(0, k, size=(2, 3, 12, 10))
    target[rng.random(target.shape) < 0.1] = 255
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, k, size=target.shape))
    pred[pred == 255] = 0
    p, t = torch.tensor(pred), torch.tensor(target)
    frame_miou = miou(p, t, k)
    moving = miou(p, t, k, classes=HVP_MOVING_CLASSES)
    for b in range(2):
        for s in range(3):
            iou = _loop_iou(_loop_confusion(pred[b, s], target[b, s], k, 255))
            assert frame_miou[b, s].item() == pytest.approx(np.nanmean(iou), abs=1e-6)
            assert moving[b, s].item() == pytest.approx(np.nanmean(iou[list(HVP_MOVING_CLASSES)]), abs=1e-6)
    # Dataset-level accumulation over two calls equals one confusion matrix over everything.
    metric = MIoU(k, classes="hvp-moving")
    metric(p[:1], t[:1])
    metric.update(p[1:], t[1:])
    ref_cm = _loop_confusion(pred, target, k, 255)
    np.testing.assert_array_equal(metric.confusion[:, :k].numpy(), ref_cm)
    result = metric.compute()
    np.testing.assert_allclose(result["per_class"].numpy(), _loop_iou(ref_cm))
    assert result["miou"] == pytest.approx(np.nanmean(_loop_iou(ref_cm)[list(HVP_MOVING_CLASSES)]))


def test_hvp_moving_classes_are_the_eight_cityscapes_things():
    assert HVP_MOVING_CLASSES == (11, 12, 13, 14, 15, 16, 17, 18)
    assert HVP_MOVING_CLASS_NAMES == ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")


def test_prediction_of_the_ignore_id_counts_as_a_miss():
    target = torch.tensor([0, 0, 1, 1]).view(1, 1, 1, 4)
    pred = torch.tensor([0, 255, 1, 1]).view(1, 1, 1, 4)
    iou = per_class_iou(pred, target, 2)[0, 0]
    np.testing.assert_allclose(iou.numpy(), [0.5, 1.0])


def test_bad_labels_are_clear_errors():
    good = torch.zeros(1, 2, 4, 4, dtype=torch.int64)
    with pytest.raises(DataFormatError, match="class id 19, outside 0..18"):
        miou(good + 19, good, 19)
    with pytest.raises(DataFormatError, match=r"pred \(1, 2, 4, 4\) vs target \(1, 2, 4, 5\)"):
        miou(good, torch.zeros(1, 2, 4, 5, dtype=torch.int64), 19)
    with pytest.raises(DataFormatError, match="integer class ids"):
        miou(good.float(), good, 19)
    with pytest.raises(DataFormatError, match="4-D"):
        miou(good[0], good[0], 19)
    with pytest.raises(ValueError, match="classes"):
        miou(good, good, 19, classes=[3, 25])
