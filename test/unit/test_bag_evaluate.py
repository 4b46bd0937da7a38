"""`dms-net-bag evaluate` on bags made from REAL ODIR images (test/data) with a tiny exported bundle:
the bag path gives what the folder path gives, for every storage, transport and
acquisition model, and nothing is dropped silently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dms_net_core.bundle import ModelBundle
from dms_net_core.data.odir import load_odir
from dms_net_core.data.preprocess import load_rgb, preprocess_pair
from dms_net_core.metrics import full_report
from dms_net_core.runtime import create_backend
from dms_net_ros.bag import cli, io
from dms_net_ros.bag.evaluate import evaluate_bag
from dms_net_ros.bag.make import AcquisitionModel, make_bag
from dms_net_ros.bag.pair_results import read_pairs_csv, scored_pairs
from dms_net_ros.node_parameters import PipelineSettings
from dms_net_ros.pairing import PairingSettings
from test.fakes.tiny_bundle import tiny_bundle_path
from test.odir_data import SUBSET_DIR

N_PATIENTS = 12


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return tiny_bundle_path(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    return ModelBundle.load(bundle_dir)


@pytest.fixture(scope="module")
def backend(bundle):
    be = create_backend(bundle, backend="onnxruntime", device="cpu")
    yield be
    be.close()


@pytest.fixture(scope="module")
def records():
    return load_odir(SUBSET_DIR / "labels.csv").records[:N_PATIENTS]


@pytest.fixture(scope="module")
def folder_reference(records, bundle, backend):
    """The folder path: files -> load_rgb -> THE preprocessing -> the same engine, one pair at a time (as the node)."""
    probs = []
    for r in records:
        left, right = preprocess_pair(load_rgb(r.left_path), load_rgb(r.right_path), bundle.preprocess)
        probs.append(backend.infer(left, right).probabilities[0])
    return {r.patient_id: p for r, p in zip(records, probs)}


@pytest.fixture(scope="module")
def raw_eval(records, bundle, backend, tmp_path_factory):
    bag = make_bag(records, tmp_path_factory.mktemp("raw") / "bag", storage="mcap").bag
    return evaluate_bag(bag, bundle, backend)


def _probs_by_patient(evaluation) -> dict[str, np.ndarray]:
    return {p.patient_id: p.probabilities for p in evaluation.pairs}


def test_round_trip_equals_folder_probabilities_and_metrics(raw_eval, records, folder_reference):
    assert raw_eval.counts()["pairs_by_status"] == {"ok": N_PATIENTS, "ungradable": 0, "error": 0}
    assert raw_eval.unpaired == [] and raw_eval.unlabeled == 0 and raw_eval.unused_labels == []
    got = _probs_by_patient(raw_eval)
    assert sorted(got) == sorted(folder_reference)
    for pid, ref in folder_reference.items():
        np.testing.assert_allclose(got[pid], ref, atol=1e-5, rtol=0)
    assert [p.exam_id for p in raw_eval.pairs] == [f"exam-{r.patient_id}" for r in records]
    scored = scored_pairs(raw_eval.pairs)
    labels = np.stack([p.labels for p in scored])
    np.testing.assert_array_equal(labels, np.stack([r.labels for r in records]).astype(np.float32))
    bag_report = full_report(labels, np.stack([p.probabilities for p in scored]))
    folder_report = full_report(labels, np.stack([folder_reference[r.patient_id] for r in records]))
    for key in ("kappa", "f1", "auc", "final"):
        assert bag_report["official"][key] == pytest.approx(folder_report["official"][key], abs=1e-6)


def test_matches_training_evaluate_on_the_folder(raw_eval, records, bundle, backend):
    from training.evaluate import evaluate_pairs

    labels, probs = evaluate_pairs(backend, records, bundle.preprocess, 4)
    np.testing.assert_array_equal(labels, np.stack([r.labels for r in records]))
    got = _probs_by_patient(raw_eval)
    np.testing.assert_allclose(np.stack([got[r.patient_id] for r in records]), np.asarray(probs), atol=1e-5, rtol=0)


def test_compressed_sqlite3_sequential_jitter_pairs_every_patient(records, bundle, backend, raw_eval, tmp_path):
    acq = AcquisitionModel(mode="sequential", eye_delay_s=0.3, jitter_s=0.15, period_s=2.0, seed=3)
    bag = make_bag(records, tmp_path / "bag", storage="sqlite3", compressed=True, acquisition=acq).bag
    ev = evaluate_bag(bag, bundle, backend)
    assert "CompressedImage" in ev.topics["left"] and ev.storage == "sqlite3"
    assert len(ev.pairs) == N_PATIENTS and ev.unpaired == [] and ev.unlabeled == 0
    assert all(0.15e9 <= p.right_stamp_ns - p.left_stamp_ns <= 0.45e9 for p in ev.pairs)
    # the source JPEG bytes decode to the pixels load_rgb reads: identical probabilities
    raw = _probs_by_patient(raw_eval)
    for pid, probs in _probs_by_patient(ev).items():
        np.testing.assert_allclose(probs, raw[pid], atol=1e-6, rtol=0)


def test_delay_beyond_slop_is_counted_never_silent(records, bundle, backend, tmp_path):
    acq = AcquisitionModel(mode="sequential", eye_delay_s=0.8, period_s=4.0)
    bag = make_bag(records[:3], tmp_path / "bag", acquisition=acq).bag
    ev = evaluate_bag(bag, bundle, backend)  # node default slop 0.5 s
    assert ev.pairs == [] and len(ev.unpaired) == 6
    assert {u["reason"] for u in ev.unpaired} == {"unpaired_timeout"} and ev.drops["unpaired_timeout"] == 6
    assert "never arrived" in ev.unpaired[0]["message"] and len(ev.unused_labels) == 3
    wider = evaluate_bag(bag, bundle, backend, settings=PipelineSettings(pairing=PairingSettings(slop_s=1.0)))
    assert len(wider.pairs) == 3 and wider.unpaired == []


def test_undecodable_image_gives_error_pair(records, bundle, backend, tmp_path):
    bag = tmp_path / "bag"
    stamps = AcquisitionModel().stamps(2)
    with io.BagWriter(bag, "mcap") as writer:
        for rec, (l_ns, r_ns) in zip(records[:2], stamps):
            left = Path(rec.left_path).read_bytes()
            if rec is records[1]:
                left = left[:2] + bytes(600)  # a JPEG start marker followed by garbage
            writer.write("/left/image_raw/compressed", io.COMPRESSED_IMAGE_TYPE, l_ns,
                         io.make_compressed_image(left, l_ns, "l"))
            writer.write("/right/image_raw/compressed", io.COMPRESSED_IMAGE_TYPE, r_ns,
                         io.make_compressed_image(Path(rec.right_path).read_bytes(), r_ns, "r"))
    ev = evaluate_bag(bag, bundle, backend, use_labels=False)
    assert [p.status for p in ev.pairs] == ["ok", "error"]
    assert ev.pairs[1].probabilities is None and "left" in ev.pairs[1].message and "corrupt" in ev.pairs[1].message
    assert ev.topics["exam_id"] == "(none)" and ev.counts()["pairs_by_status"]["error"] == 1


def test_cli_evaluate_on_robot_style_bag(records, bundle_dir, tmp_path, capsys):
    """Custom namespaced topics, labels next to the bag, outputs written and readable."""
    bag = make_bag(records[:4], tmp_path / "robot", left_topic="/robot1/cam_l/image", right_topic="/robot1/cam_r/image",
                   exam_topic="/robot1/exam").bag
    (bag / io.LABELS_FILENAME).rename(tmp_path / "robot.labels.csv")
    out = tmp_path / "eval"
    rc = cli.main(["evaluate", "-q", str(bag), str(bundle_dir), "-o", str(out), "--backend", "onnxruntime",
                   "--device", "cpu",
                   "--left-topic", "cam_l/image", "--right-topic", "/robot1/cam_r/image", "--exam-topic", "exam"])
    text = capsys.readouterr().out
    assert rc == 0, text
    summary = json.loads((out / "bag_summary.json").read_text())
    assert (summary["pairs"] == 4 and summary["scored_pairs"] == 4
            and summary["topics"]["left"].startswith("/robot1/cam_l/image"))
    pairs = read_pairs_csv(out / "pairs.csv")
    assert [p.exam_id for p in pairs] == [f"exam-{r.patient_id}" for r in records[:4]]
    assert all(p.probabilities is not None and p.labels is not None for p in pairs)
    assert "ODIR official" in text


def test_cli_evaluate_errors_in_one_line(records, bundle_dir, tmp_path, capsys):
    bag = make_bag(records[:1], tmp_path / "bag").bag
    rc = cli.main(["evaluate", "-q", str(bag), str(bundle_dir), "--left-topic", "nope", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "/left/image_raw [sensor_msgs/msg/Image]" in err
    (bag / io.LABELS_FILENAME).unlink()
    rc = cli.main(["evaluate", "-q", str(bag), str(bundle_dir), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no labels sidecar" in err and "--no-labels" in err
    rc = cli.main(["evaluate", "-q", str(bag), str(tmp_path / "no_bundle"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "no_bundle" in err
