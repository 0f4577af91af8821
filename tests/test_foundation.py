"""The skeleton every later feature hangs on: CLI, thread settings, network guard, benchmark harness."""

from __future__ import annotations

import json
import mmap
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli import COMMANDS, build_parser, main
from muq_model.runtime import configure_threads, select_device


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command.name in out


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "--library" in capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_subcommand_is_implemented_by_its_module(command):
    module = command.load()
    assert callable(getattr(module, f"add_arguments_{command.name}"))
    assert callable(getattr(module, f"run_{command.name}"))


def test_a_command_whose_module_is_missing_fails_loudly(monkeypatch):
    """No silent "not implemented" placeholder: a wrong module name is an import error at once."""
    import app.cli as cli

    broken = cli.Command("broken", "a command pointing nowhere", "app.no_such_module")
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + (broken,))
    with pytest.raises(ModuleNotFoundError, match="app.no_such_module"):
        build_parser()


def test_global_options_before_and_after_subcommand(monkeypatch):
    monkeypatch.delenv("MUQSEARCH_LIBRARY", raising=False)
    parser = build_parser()
    before = parser.parse_args(["--library", "/tmp/a", "--json", "status"])
    after = parser.parse_args(["status", "--library", "/tmp/b", "--device", "cpu"])
    assert before.library == "/tmp/a" and before.json is True
    assert after.library == "/tmp/b" and after.device == "cpu" and after.json is False


def test_library_from_environment(monkeypatch):
    monkeypatch.setenv("MUQSEARCH_LIBRARY", "/tmp/from-env")
    assert build_parser().parse_args(["status"]).library == "/tmp/from-env"


def test_threads_from_environment(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("MUQSEARCH_THREADS", "1")
        assert configure_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("MUQSEARCH_THREADS", "zero")
        with pytest.raises(ValueError, match="MUQSEARCH_THREADS"):
            configure_threads()
    finally:
        torch.set_num_threads(before)


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            select_device("cuda")


def test_network_guard_blocks_remote_but_not_loopback():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(Exception, match="network connection"):
            sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed
    finally:
        sock.close()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket()
    try:
        client.connect(server.getsockname())
    finally:
        client.close()
        server.close()


def test_python_m_app_help_runs_in_a_subprocess():
    out = subprocess.run([sys.executable, "-m", "app", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "serve" in out.stdout


def test_matmul_benchmark_writes_json(tmp_path, capsys):
    from benchmarks.harness import Report, percentile
    from benchmarks.matmul import measure_gflops

    assert measure_gflops(64, repeats=2) > 0
    report = Report("unit", ["a", "b"])
    report.add_row(1, 2.5)
    with pytest.raises(ValueError):
        report.add_row(1)
    path = report.save(tmp_path)
    payload = json.loads(path.read_text())
    assert payload["rows"] == [[1, 2.5]] and "torch" in payload["machine"]["versions"]
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5 and percentile([5.0], 99) == 5.0


def test_a_benchmark_whose_packages_are_missing_is_reported_not_fatal(monkeypatch, capsys):
    import benchmarks.__main__ as bench

    monkeypatch.setattr(bench, "discover", lambda: {"matmul": "benchmarks.matmul", "ghost": "benchmarks.ghost_x"})
    with pytest.raises(SystemExit) as exc:
        bench.main(["ghost"])
    assert exc.value.code == 2
    assert "unavailable here" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        bench.main(["--help"])  # the listing still works and shows the healthy benchmark
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "matmul" in out and "ghost" in out


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RssAnon is Linux's")
def test_anonymous_peak_counts_allocations_not_mapped_file_pages(tmp_path):
    """benchmarks search reports RAM need with it: pages of a memory-mapped file must not count."""
    from benchmarks.harness import AnonymousPeak, anonymous_rss_mb

    size = 256 * 2**20
    vectors = tmp_path / "vectors.bin"
    with open(vectors, "wb") as out:
        out.truncate(size)
    before = anonymous_rss_mb()
    with AnonymousPeak() as mapped:
        view = np.memmap(vectors, dtype=np.uint8, mode="r")
        assert int(view[:: 4096].sum()) == 0  # every page read
    with AnonymousPeak() as allocated:
        # fresh pages from the kernel (an allocator could hand back pages it kept from earlier tests)
        block = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        held = np.frombuffer(block, dtype=np.uint8)
        held[:] = 1  # every page written
    assert held[-1] == 1 and view.shape == (size,)  # both alive until their block's last sample
    assert mapped.mb - before < 64
    assert allocated.mb - before > 200
