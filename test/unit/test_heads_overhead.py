"""benchmarks/heads_overhead.py (issue 15's one-process comparison) runs its whole flow on the CPU:
both bundles, every model form, the ratio columns and the summary (no timing asserts)."""

from __future__ import annotations

import torch

from benchmarks.heads_overhead import BackboneOnly, main
from dms_net_core.model import DMSNetConfig


def test_heads_overhead_table_on_tiny_models(tmp_path):
    out = tmp_path / "heads.md"
    rows = ("dms:torch-fp32,control:torch-fp32,dms-reference:torch-fp32,backbone:torch-fp32,"
            "dms-no-attention:torch-fp32,dms:torch-fp16-cudagraph")
    rc = main(["--device", "cpu", "--backbone", "tiny", "--image-size", "64", "--rows", rows, "--batch-sizes", "2",
               "--iterations", "2", "--throughput-iterations", "1", "--save-bundles", str(tmp_path / "bundles"),
               "--output", str(out)])
    assert rc == 0
    table = out.read_text()
    lines = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()
             if line.startswith("| ") and "torch-fp32" in line}
    assert set(lines) == {"DMS-Net", "plain control", "DMS-Net, pre-issue-15 heads", "bare backbone, both eyes",
                          "DMS-Net, attention maps not copied out"}
    assert lines["plain control"].split(" | ")[4] == "1.00x"  # ratios are to the control of the same backend
    assert lines["DMS-Net, pre-issue-15 heads"].split(" | ")[7] == "1.00x"
    assert "no-attention-outputs" in lines["DMS-Net, attention maps not copied out"]
    assert "- torch-fp32: DMS-Net / control at batch 1 = " in table and "target <= 1.20" in table
    assert "- torch-fp32: batch-2 throughput " in table
    assert "- DMS-Net / torch-fp16-cudagraph: needs a CUDA GPU" in table
    assert ((tmp_path / "bundles" / "dms_net" / "model.json").is_file()
            and (tmp_path / "bundles" / "plain_binocular" / "model.json").is_file())


def test_unknown_row_is_a_usage_error(capsys):
    assert main(["--device", "cpu", "--rows", "dms:tflite"]) == 2
    assert "MODEL:BACKEND" in capsys.readouterr().err


def test_bare_backbone_runs_the_backbone_once_on_both_eyes():
    torch.manual_seed(0)
    model = BackboneOnly(DMSNetConfig.tiny(architecture="plain_binocular")).eval()
    calls = []
    model.backbone.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    left = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits, att_left, att_right = model(left, torch.randn(3, 3, 64, 64))
    assert calls == [6] and logits.shape == (3, 8) and att_left.shape == (3, 1, 4, 4)
    assert torch.equal(att_left, torch.ones_like(att_left))
