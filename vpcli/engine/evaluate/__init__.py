"""The evaluation engine behind `vpcli eval`: per-frame metrics, best-of-N, confidence intervals.

Two ways in, one aggregation:

* **folders** (``pred=``, ``gt=``): predictions and ground truth written to disk, matched by name
  (rule in :mod:`.folders`: what `vpcli data convert`, `segment`, `flow`, `predict` and the
  synthetic generators write is matched as it is, and a prediction's ``meta.json`` says which
  ground-truth frames it shows, so the context is never scored). A clip with several prediction
  samples is scored like a stochastic model's samples (best of N).
* **a predictor** (``method=``, ``weights=``, ``data=``): the papers' protocol (SVG, SLAMP, HVP):
  for every test sequence the context is encoded once and ``samples`` futures are drawn as one
  batch through ``Predictor.predict``; per-frame metrics are computed for every sample as the
  steps are yielded.

Best of N, per sequence and per metric: each sample's score is the mean of its per-frame values
over the horizon; the sample with the best score (highest when the metric's
``higher_is_better``, e.g. PSNR/SSIM, lowest otherwise, e.g. LPIPS/MSE) is kept, so different
metrics may keep different samples, as in the SVG/SLAMP evaluation code. Reported per metric:
the mean over sequences of the kept sample's score, a 95% confidence interval of that mean
(Student's t with n-1 degrees of freedom: ``t_0.975 * s / sqrt(n)``), and the per-time-step
mean curve (with its own 95% CI) of the kept samples. Video-set metrics (FVD) use one sample per
sequence (the first: an unbiased draw), context frames included, against the real clips.

Streaming: nothing holds all samples of all sequences. Per batch of sequences only the per-frame
values ``(B, S, T)`` live; across sequences only running sums (Welford means and variances, per
sequence and per step), the FVD embeddings (400 numbers per video) and the identity of the
current best and worst sequence are kept. ``results.csv`` is written row by row. The frames of
the best and worst sequences are re-created at the end (re-read from disk, or re-predicted from
the same seed) for the comparison videos.

Errors are raised before any output is published: the output folder is written under a
temporary name and renamed when complete (``overwrite`` replaces an existing one). A metric
whose pretrained weights cannot be had (LPIPS, CSIM, FVD offline) is not an error while others
can be computed: results.json lists it under ``missing`` with the reason and how to enable it
(the CLI prints one line per metric and exits 1).

One concern a module:

* :mod:`.options` -- :class:`EvalOptions`, every option declared and checked once;
* :mod:`.metrics` -- metric names and weights from the command line, :class:`MetricRunner`;
* :mod:`.aggregate` -- best of N, running means / CIs / curves, results.csv rows, FVD embeddings;
* :mod:`.folders` -- clips on disk: scanning, matching, reading, scoring;
* :mod:`.protocol` -- a predictor's test set, its sampled steps, scoring, re-prediction;
* :mod:`.outputs` -- comparison videos, plots, results.json;
* :mod:`.run` -- :func:`run_evaluation` / :func:`evaluate`, which tie them together.
"""
from __future__ import annotations

from vpcli.engine.evaluate.aggregate import RunningCurve, select_best
from vpcli.engine.evaluate.folders import EvalWarning, match_folders, resolve_offsets, scan_clips
from vpcli.engine.evaluate.metrics import MetricRunner, build_metrics, parse_metric_names, parse_metric_weights
from vpcli.engine.evaluate.options import EvalOptions
from vpcli.engine.evaluate.outputs import plot_curve
from vpcli.engine.evaluate.protocol import HEADS, load_predictor
from vpcli.engine.evaluate.run import evaluate, run_evaluation

__all__ = [
    "HEADS",
    "EvalOptions",
    "EvalWarning",
    "MetricRunner",
    "RunningCurve",
    "build_metrics",
    "evaluate",
    "load_predictor",
    "match_folders",
    "parse_metric_names",
    "parse_metric_weights",
    "plot_curve",
    "resolve_offsets",
    "run_evaluation",
    "scan_clips",
    "select_best",
]
