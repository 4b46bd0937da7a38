"""The checkpoint format's one owner (`dms_net_core.checkpoint`): what the trainer writes is
what export, evaluation and ensembles rebuild, weight for weight; a misfit is one line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dms_net_core.checkpoint import (
    CHECKPOINT_KEYS,
    RESUME_KEYS,
    checkpoint_preprocess,
    checkpoint_summary,
    checkpoint_thresholds,
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    resume_state,
    slim_checkpoint,
    with_results,
    with_training_state,
)
from dms_net_core.classes import NUM_CLASSES
from dms_net_core.data.preprocess import PreprocessConfig
from dms_net_core.model import DMSNetConfig, build_model


def _saved(tmp_path, cfg: DMSNetConfig, **kw):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    ckpt = make_checkpoint(model.state_dict(), cfg, PreprocessConfig(image_size=cfg.image_size), metrics={},
                           data_summary={}, epoch=1, step=2, args={"seed": 0}, **kw)
    path = tmp_path / "best.pt"
    torch.save(ckpt, path)
    return model, path


def test_written_checkpoint_rebuilds_the_same_network(tmp_path):
    cfg = DMSNetConfig.tiny(per_eye_heads=True)
    model, path = _saved(tmp_path, cfg)
    ckpt = load_checkpoint(path)
    rebuilt = model_from_checkpoint(ckpt)
    x = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        for a, b in zip(model(x, x.flip(0)), rebuilt(x, x.flip(0))):
            torch.testing.assert_close(a, b)
    assert checkpoint_preprocess(ckpt) == PreprocessConfig(image_size=cfg.image_size)
    np.testing.assert_array_equal(checkpoint_thresholds(ckpt), np.full(NUM_CLASSES, 0.5, np.float32))


def test_tuned_thresholds_and_old_checkpoints_without_preprocess(tmp_path):
    cfg = DMSNetConfig.tiny()
    _, path = _saved(tmp_path, cfg, thresholds=[0.25] * NUM_CLASSES)
    ckpt = load_checkpoint(path)
    assert checkpoint_thresholds(ckpt).tolist() == [0.25] * NUM_CLASSES
    del ckpt["preprocess"]
    assert checkpoint_preprocess(ckpt).image_size == cfg.image_size


def test_weights_that_do_not_fit_the_config_are_one_line(tmp_path):
    _, path = _saved(tmp_path, DMSNetConfig.tiny())
    ckpt = load_checkpoint(path)
    ckpt["model_config"] = DMSNetConfig.tiny(per_eye_heads=True).to_dict()  # a head the weights lack
    with pytest.raises(ValueError, match="do not fit model_config") as err:
        model_from_checkpoint(ckpt)
    assert "\n" not in str(err.value) and "missing" in str(err.value)
    ckpt["model_config"] = DMSNetConfig.tiny(embed_dim=24).to_dict()  # same names, other shapes
    with pytest.raises(ValueError, match="do not fit model_config") as err:
        model_from_checkpoint(ckpt)
    assert "\n" not in str(err.value)


def test_a_dict_without_weights_is_not_a_checkpoint(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no 'model'/'model_config'"):
        load_checkpoint(tmp_path / "other.pt")


def test_resume_state_reads_back_what_last_pt_holds(tmp_path):
    cfg = DMSNetConfig.tiny()
    _, path = _saved(tmp_path, cfg)
    base = load_checkpoint(path)
    last = with_training_state(base, optimizer={"o": 1}, lr_scheduler={"s": 2}, scaler=None, rng={"torch": 3},
                               best_final=0.5, best_epoch=1, epochs_total=7, history=[{"epoch": 0}])
    state = resume_state(last, epochs_total=30)
    assert (state.optimizer, state.lr_scheduler, state.scaler, state.rng) == ({"o": 1}, {"s": 2}, None, {"torch": 3})
    assert (state.epoch, state.step, state.best_final, state.best_epoch, state.epochs_total) == (1, 2, 0.5, 1, 7)
    assert state.history == [{"epoch": 0}] and state.model is base["model"]
    with pytest.raises(ValueError, match="resume from the last.pt"):
        resume_state(base, epochs_total=30)
    slim = slim_checkpoint(last)
    assert set(slim) == set(CHECKPOINT_KEYS) and all(v.dtype != torch.float32 for v in slim["model"].values())
    done = with_results(base, thresholds=np.full(NUM_CLASSES, 0.25, np.float32), metrics={"official": {"final": 0.7}},
                        history=[])
    np.testing.assert_array_equal(checkpoint_thresholds(done), np.full(NUM_CLASSES, 0.25, np.float32))
    summary = checkpoint_summary(done)
    assert summary["seed"] == 0 and summary["epoch"] == 1 and summary["val_official"] == {"final": 0.7}
    assert summary["architecture"] == cfg.architecture and summary["split_file"] is None


# ----------------------------------------------------------------------------- one owner
REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("dms_net_core", "dms_net_ros", "training", "scripts", "benchmarks")
OWNER = REPO / "dms_net_core" / "checkpoint.py"
KEYS = frozenset(CHECKPOINT_KEYS + RESUME_KEYS)
#: keys no other format in the project shares with the checkpoint (model.json has model_config,
#: thresholds, metrics, ...): a literal holding two of them is a hand-written checkpoint
DISTINCT_KEYS = frozenset(RESUME_KEYS + ("model", "args", "step"))
#: calls whose result is a checkpoint dict (``torch.load`` of a best.pt included)
SOURCES = {"load_checkpoint", "check_checkpoint", "make_checkpoint", "with_results", "with_training_state", "load"}


def _call_names(node: ast.AST) -> set[str]:
    return {(c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", ""))
            for c in ast.walk(node) if isinstance(c, ast.Call)}


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Subscript, ast.Attribute, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _key(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def checkpoint_key_literals(source: str) -> list[str]:
    """``line: text`` for each checkpoint key spelled in ``source``: a subscript or ``.get``/``.pop``
    with a checkpoint key on a checkpoint (a name with ckpt/checkpoint in it, or bound to the result
    of `SOURCES`), and any literal dict, tuple, list or set with two keys only checkpoints have."""
    tree = ast.parse(source)
    ckpt_names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and re.search("ckpt|checkpoint", n.id)}
    ckpt_names |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg) and re.search("ckpt|checkpoint", a.arg)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None \
                and _call_names(node.value) & SOURCES:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            ckpt_names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    found = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Subscript) and _root(node.value) in ckpt_names:
            key = _key(node.slice)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("get", "pop", "setdefault")
              and node.args and _root(node.func.value) in ckpt_names):
            key = _key(node.args[0])
        elif isinstance(node, (ast.Dict, ast.Tuple, ast.List, ast.Set)):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            spelled = {_key(k) for k in items if k is not None} & DISTINCT_KEYS
            key = ", ".join(sorted(spelled)) if len(spelled) >= 2 else None
        if key in KEYS or (key and "," in key):
            found.append(f"{node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def test_no_checkpoint_key_is_spelled_outside_checkpoint_py():
    """`dms_net_core.checkpoint` owns the format: product code reads and writes it through its
    functions (`checkpoint_summary`, `with_training_state`, `resume_state`, `slim_checkpoint`, ...)."""
    bad = [f"{path.relative_to(REPO)}:{hit}" for package in PRODUCT for path in sorted((REPO / package).rglob("*.py"))
           if path != OWNER for hit in checkpoint_key_literals(path.read_text())]
    assert not bad, ("checkpoint keys spelled outside dms_net_core/checkpoint.py (add a function there):\n"
                     + "\n".join(bad))


def test_the_key_checker_finds_the_hand_written_forms():
    """What train.py, ensemble.py and collect_suite.py did before checkpoint.py owned these keys."""
    resume = "ckpt = load_checkpoint(p)\nopt.load_state_dict(ckpt['optimizer'])\nh = ckpt.get('history', [])\n"
    last = "base = make_checkpoint(s)\nsave(base | {'optimizer': o, 'lr_scheduler': l}, p)\n"
    best = "best = load_checkpoint(p)\nbest['thresholds'] = t\n"
    member = "def f(first):\n    return (first.get('data_summary') or {}).get('split_file')\n"
    slim = "KEYS = ('model', 'model_config', 'epoch', 'step', 'args')\nc = torch.load(p)\nm = c['model']\n"
    assert len(checkpoint_key_literals(resume)) == 2 and len(checkpoint_key_literals(last)) == 1
    assert len(checkpoint_key_literals(best)) == 1 and len(checkpoint_key_literals(slim)) == 2
    assert checkpoint_key_literals(member) == []  # a parameter named otherwise is not seen: name it ckpt
    assert checkpoint_key_literals("row = {'epoch': 1, 'step': 2}\nmeta = {'model_config': c, 'thresholds': t}\n") == []
