"""vpcli.nn.fold: eval-mode BatchNorm folded into the convolution before it."""
import sys
from pathlib import Path

import torch
from torch import nn

from vpcli.nn.fold import fold_batchnorm

sys.path.insert(0, str(Path(__file__).parent))
from test_slamp import clip, frames_of, keyed_noise, lively, tiny_slamp  # noqa: E402


def _random_stats(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_folded_layers_equal_conv_then_batchnorm():
    torch.manual_seed(0)
    for conv in (nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.Conv2d(6, 8, 3, padding=1, groups=2),
                 nn.ConvTranspose2d(6, 8, 4, 2, 1, bias=False), nn.ConvTranspose2d(6, 8, 4, 2, 1)):
        seq = nn.Sequential(conv, nn.BatchNorm2d(8), nn.LeakyReLU(0.2)).eval()
        _random_stats(seq)
        x = torch.randn(3, 6, 9, 7)
        want = seq(x)
        assert fold_batchnorm(seq) == 1
        assert isinstance(seq[1], nn.Identity)
        assert (seq(x) - want).abs().max() < 1e-5 * want.abs().max()


def test_grouped_transposed_convs_and_training_batchnorm_kinds_are_left_alone():
    seq = nn.Sequential(nn.ConvTranspose2d(4, 4, 4, 2, 1, groups=2), nn.BatchNorm2d(4),
                        nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    assert fold_batchnorm(seq) == 0


def test_slamp_for_inference_folds_and_predicts_the_same_frames():
    from vpcli.engine.loading import for_inference
    m = lively(tiny_slamp()).eval()
    _random_stats(m)
    ctx = {"rgb": clip(2, 3)}
    want = torch.stack(frames_of(m.predict(ctx, 4, samples=3, noise=keyed_noise)))
    n_bn = sum(type(x) is nn.BatchNorm2d for x in m.modules())
    m = for_inference(m)
    assert n_bn > 10 and sum(type(x) is nn.BatchNorm2d for x in m.modules()) == 0
    got = torch.stack(frames_of(m.predict(ctx, 4, samples=3, noise=keyed_noise)))
    assert (got - want).abs().max() < 1e-4


def test_batch_per_sample_batchnorms_keep_their_batch_statistics():
    from vpcli.engine.loading import for_inference
    m = lively(tiny_slamp(batchnorm="batch-per-sample")).eval()
    ctx = {"rgb": clip(2, 3)}
    want = torch.stack(frames_of(m.predict(ctx, 3, samples=2, noise=keyed_noise)))
    m = for_inference(m)
    assert sum(type(x).__name__ == "_GroupBatchNorm2d" for x in m.modules()) > 10   # encoders / decoders: kept
    got = torch.stack(frames_of(m.predict(ctx, 3, samples=2, noise=keyed_noise)))
    assert (got - want).abs().max() < 1e-4
