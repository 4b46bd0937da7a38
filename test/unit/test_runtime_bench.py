"""dms-net-bench: runs against a bundle, writes the Markdown table, and lists what it skipped (no timing asserts)."""

from __future__ import annotations

import sys

from benchmarks.bench_backends import main
from test.fakes.tiny_bundle import tiny_bundle_path


def test_bench_table_on_tiny_bundle(tmp_path_factory, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    bundle = tiny_bundle_path(tmp_path_factory.getbasetemp())
    out = tmp_path / "table.md"
    rc = main(
        [
            "--bundle", str(bundle), "--device", "cpu", "--backends", "onnxruntime,torch-fp32,torch-fp16-cudagraph,tensorrt-fp16",
            "--iterations", "2", "--throughput-iterations", "1", "--batch-sizes", "2,3", "--inputs", "uint8,float32",
            "--output", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    table = out.read_text()
    assert "| backend | input | batch-1 p50 ms | batch-1 p95 ms | pairs/s @ 2 | pairs/s @ 3 |" in table
    rows = [line for line in table.splitlines() if line.startswith("| onnxruntime") or line.startswith("| torch-fp32")]
    assert len(rows) == 4 and all("cpu fp32" in r for r in rows)  # each backend timed with both input forms
    assert sorted(r.split(" | ")[1] for r in rows) == ["float32", "float32", "uint8", "uint8"]
    assert "- torch-fp16-cudagraph (uint8,float32): needs a CUDA GPU" in table
    assert "- tensorrt-fp16 (uint8,float32): needs a CUDA GPU" in table
    assert "Machine: CPU" in table and "onnxruntime" in table.split("Model:")[0]


def test_unknown_backend_is_rejected(capsys):
    assert main(["--backends", "tflite", "--device", "cpu"]) == 2
    assert "unknown backends ['tflite']" in capsys.readouterr().err


def test_unknown_input_form_is_rejected(capsys):
    assert main(["--inputs", "float16", "--device", "cpu"]) == 2
    assert "--inputs 'float16': choose from uint8, float32" in capsys.readouterr().err
