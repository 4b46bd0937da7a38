"""dms-net-bench: runs against a bundle, writes the Markdown table, and lists what it skipped (no timing asserts)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from benchmarks.bench_backends import main
from test.fakes.tiny_bundle import tiny_bundle_path


def test_bench_table_on_tiny_bundle(tmp_path_factory, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    bundle = tiny_bundle_path(tmp_path_factory.getbasetemp())
    out = tmp_path / "table.md"
    rc = main(
        [
            "--bundle", str(bundle), "--device", "cpu",
            "--backends", "onnxruntime,torch-fp32,torch-fp16-cudagraph,tensorrt-fp16",
            "--iterations", "2", "--throughput-iterations", "1", "--batch-sizes", "2,3", "--inputs", "uint8,float32",
            "--output", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    table = out.read_text()
    assert ("| backend | input | batch-1 p50 ms | batch-1 p95 ms | pairs/s @ 2 | pairs/s @ 3 | start-up s "
            "| batch-1 upload / network / download ms |") in table
    rows = [line for line in table.splitlines() if line.startswith("| onnxruntime") or line.startswith("| torch-fp32")]
    assert len(rows) == 4 and all("cpu fp32" in r for r in rows)  # each backend timed with both input forms
    assert sorted(r.split(" | ")[1] for r in rows) == ["float32", "float32", "uint8", "uint8"]
    assert all(r.split(" | ")[7] == "-" for r in rows)  # the GPU-timeline split exists only on CUDA
    assert "- torch-fp16-cudagraph (uint8,float32): needs a CUDA GPU" in table
    assert "- tensorrt-fp16 (uint8,float32): needs a CUDA GPU" in table
    assert "Machine: CPU" in table and "onnxruntime" in table.split("Model:")[0]


def test_unknown_backend_is_rejected(capsys):
    assert main(["--backends", "tflite", "--device", "cpu"]) == 2
    assert "unknown backends ['tflite']" in capsys.readouterr().err


def test_a_row_can_pin_its_input_form(tmp_path_factory, tmp_path):
    bundle = tiny_bundle_path(tmp_path_factory.getbasetemp())
    out = tmp_path / "table.md"
    rc = main(["--bundle", str(bundle), "--device", "cpu", "--backends", "onnxruntime@float32,torch-fp32",
               "--inputs", "uint8", "--iterations", "1", "--throughput-iterations", "1", "--batch-sizes", "2",
               "--output", str(out)])
    assert rc == 0
    rows = [line.split(" | ")[:2] for line in out.read_text().splitlines()
            if line.startswith(("| onnxruntime", "| torch-fp32"))]
    assert rows == [["| onnxruntime", "float32"], ["| torch-fp32", "uint8"]]


def test_unknown_row_form_is_rejected(capsys):
    assert main(["--backends", "onnxruntime@float16", "--device", "cpu"]) == 2
    assert "unknown backends ['onnxruntime@float16']" in capsys.readouterr().err


def test_unknown_input_form_is_rejected(capsys):
    assert main(["--inputs", "float16", "--device", "cpu"]) == 2
    assert "--inputs 'float16': choose from uint8, float32" in capsys.readouterr().err


def test_stage_split_runs_outside_the_timed_loop_and_takes_medians():
    """The GPU-timeline split (a CUDA-only feature of the torch backend) is switched on only for
    its own pass, then off again, and reported as per-stage medians."""
    from benchmarks.bench_backends import _stage_split
    from dms_net_core.runtime.base import InferenceResult

    class CudaLikeBackend:
        device = "cuda"

        def __init__(self):
            self.stage_timing = False
            self.calls = 0

        def infer(self, left, right):
            assert self.stage_timing and left.dtype == np.uint8 and left.shape == (1, 8, 8, 3)
            self.calls += 1
            t = {"inference": 3.0, "upload": 0.1 * self.calls, "network": 2.0, "download": 0.05}
            return InferenceResult(np.zeros((1, 8), np.float32), np.zeros((1, 8), np.float32), None, None, t)

    backend = CudaLikeBackend()
    split = _stage_split(backend, 8, "uint8", 5)
    assert backend.calls == 5 and backend.stage_timing is False
    assert split == pytest.approx({"upload": 0.3, "network": 2.0, "download": 0.05})
    cpu = CudaLikeBackend()
    cpu.device = "cpu"
    assert _stage_split(cpu, 8, "uint8", 5) == {} and cpu.calls == 0
