"""vpcli.allocator: glibc malloc modes for large tensors."""
import subprocess
import sys

import pytest

from vpcli import allocator
from vpcli.errors import UsageError

pytestmark = pytest.mark.skipif(allocator.mmapped_bytes() is None, reason="needs glibc >= 2.33 (mallinfo2)")


def _mmapped_by_a_64mb_tensor(mode: str) -> int:
    """In a fresh process under ``mode`` from its start: a mode holds for a whole process (blocks
    a heap-mode phase freed stay in the heap and glibc reuses them), and other tests here run the
    CLI, which sets heap mode."""
    code = ("import torch; from vpcli import allocator; allocator.configure(%r); "
            "before = allocator.mmapped_bytes(); x = torch.empty(64 << 20, dtype=torch.uint8); "
            "print(allocator.mmapped_bytes() - before)" % mode)
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def test_heap_mode_serves_large_tensors_from_the_heap_and_glibc_mode_maps_them():
    assert _mmapped_by_a_64mb_tensor("glibc") >= 64 << 20      # a fresh mmap (and page faults) per tensor
    assert _mmapped_by_a_64mb_tensor("heap") == 0
    with allocator.using("glibc"):
        with allocator.using("heap"):
            assert allocator.current() == "heap"
        assert allocator.current() == "glibc"                  # restored


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
