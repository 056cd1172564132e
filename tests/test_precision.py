"""bf16 or fp32 per machine (vpcli/precision.py): auto never picks bf16 where the CPU lacks it, an
explicit bf16 there warns, and the micro-benchmark's verdict is cached."""
from __future__ import annotations

import json

import pytest
import torch

from vpcli import precision
from vpcli.errors import UsageError


def test_auto_is_fp32_without_avx512_and_explicit_bf16_warns(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(precision, "measure_bf16_speedup", lambda: pytest.fail("no benchmark without AVX-512"))
    assert precision.resolve("auto") == ("fp32", None)
    chosen, warning = precision.resolve("bf16")
    assert chosen == "bf16" and "AVX2" in warning and "pass --precision auto or fp32" in warning
    assert precision.resolve("fp32") == ("fp32", None)
    with pytest.raises(UsageError, match="--precision must be one of fp32, bf16, auto"):
        precision.resolve("fp16")


@pytest.mark.parametrize("speedup, want", [(1.6, "bf16"), (1.02, "fp32"), (0.4, "fp32")])
def test_auto_follows_the_cached_micro_benchmark(monkeypatch, tmp_path, speedup, want):
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    calls = []
    monkeypatch.setattr(precision, "measure_bf16_speedup", lambda: calls.append(1) or speedup)
    assert precision.resolve("auto")[0] == want
    assert precision.resolve("auto")[0] == want and len(calls) == 1  # measured once, then read from the cache
    cache = json.loads((tmp_path / "precision.json").read_text())
    assert list(cache.values()) == [speedup]
    warning = precision.resolve("bf16")[1]
    assert (warning is None) == (want == "bf16")


def test_the_micro_benchmark_measures_a_ratio():
    torch.set_num_threads(1)
    r = precision.measure_bf16_speedup()
    assert 0.01 < r < 100


def test_train_amp_auto_on_a_cpu_without_bf16_trains_in_fp32(monkeypatch, tmp_path, capsys):
    from vpcli.cli.app import main
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    with pytest.raises(SystemExit) as exc:
        main(["--threads", "1", "train", "--config", "convlstm-mmnist-tiny", "--out", str(tmp_path / "r"),
              "--set", "train.steps=2", "--set", "train.amp=bf16", "--set", "data.train_clips=8",
              "--set", "data.val_clips=0"])
    _, err = capsys.readouterr()
    assert exc.value.code == 0, err
    assert "train.amp bf16 on this machine is likely slower than fp32" in err
    assert "pass --set train.amp=auto or none" in err
