"""vpcli.allocator: glibc malloc modes for large tensors."""
import pytest
import torch

from vpcli import allocator
from vpcli.errors import UsageError

pytestmark = pytest.mark.skipif(allocator.mmapped_bytes() is None, reason="needs glibc >= 2.33 (mallinfo2)")


def _mmapped_by_a_64mb_tensor() -> int:
    before = allocator.mmapped_bytes()
    x = torch.empty(64 << 20, dtype=torch.uint8)
    grew = allocator.mmapped_bytes() - before
    del x
    return grew


def test_heap_mode_serves_large_tensors_from_the_heap_and_glibc_mode_maps_them():
    with allocator.using("glibc"):
        assert _mmapped_by_a_64mb_tensor() >= 64 << 20      # a fresh mmap (and page faults) per tensor
        with allocator.using("heap"):
            assert allocator.current() == "heap"
            assert _mmapped_by_a_64mb_tensor() == 0
        assert allocator.current() == "glibc"               # restored
        assert _mmapped_by_a_64mb_tensor() >= 64 << 20


def test_configure_reads_the_environment_and_rejects_typos(monkeypatch):
    before = allocator.current() or "glibc"
    try:
        monkeypatch.setenv(allocator.ENV, "glibc")
        assert allocator.configure() == "glibc" and allocator.current() == "glibc"
        monkeypatch.delenv(allocator.ENV)
        assert allocator.configure() == "heap"               # the default
        monkeypatch.setenv(allocator.ENV, "jemalloc")
        with pytest.raises(UsageError, match="unknown allocator mode 'jemalloc'") as e:
            allocator.configure()
        assert "VPCLI_MALLOC takes one of: heap, glibc" in e.value.hint
    finally:
        allocator.set_mode(before)


def test_the_cli_runs_in_heap_mode_and_a_bad_mode_is_a_one_line_error(monkeypatch, capsys):
    from vpcli.cli.app import main
    before = allocator.current() or "glibc"
    try:
        allocator.set_mode("glibc")
        with pytest.raises(SystemExit) as e:
            main(["weights", "list"])
        assert e.value.code == 0 and allocator.current() == "heap"
        capsys.readouterr()
        monkeypatch.setenv(allocator.ENV, "tcmalloc")
        with pytest.raises(SystemExit) as e:
            main(["weights", "list"])
        err = capsys.readouterr().err
        assert e.value.code != 0 and "unknown allocator mode 'tcmalloc'" in err and len(err.strip().splitlines()) == 1
    finally:
        allocator.set_mode(before)
