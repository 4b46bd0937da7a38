"""`dms-net-bag make` and the bag IO layer on real ODIR images (the subset in test/data): what
goes in comes out, stamps follow the acquisition model, and every broken bag fails with one
clear line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from dms_net_core.classes import CLASS_CODES
from dms_net_core.data.odir import load_odir
from dms_net_core.data.preprocess import load_rgb
from dms_net_ros.bag import cli, io
from dms_net_ros.bag.make import AcquisitionModel, make_bag
from dms_net_ros.stamps import stamp_to_ns
from test.odir_data import SUBSET_DIR

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def records():
    return load_odir(SUBSET_DIR / "labels.csv").records[:6]


def _read_all(bag: Path) -> list[tuple[str, str, int, object]]:
    with io.BagReader(bag) as reader:
        topics = [reader.find_topic(t) for t in reader.topics()]
        return [(c.topic, c.msgtype, t, io.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages(topics)]


def test_raw_mcap_round_trip_keeps_pixels_stamps_labels(records, tmp_path):
    summary = make_bag(records, tmp_path / "bag", storage="mcap")
    assert summary.messages == {"/exam_id": 6, "/left/image_raw": 6, "/right/image_raw": 6}
    assert (tmp_path / "bag" / "metadata.yaml").is_file() and list((tmp_path / "bag").glob("*.mcap"))
    labels = io.read_labels_sidecar(io.find_labels_sidecar(tmp_path / "bag"))
    assert [r.patient_id for r in labels] == [r.patient_id for r in records]
    for row, rec in zip(labels, records):
        np.testing.assert_array_equal(row.labels, rec.labels.astype(np.float32))
        assert row.exam_id == f"exam-{rec.patient_id}" and row.left_stamp_ns == row.right_stamp_ns
    msgs = _read_all(tmp_path / "bag")
    by_stamp = {}
    for topic, msgtype, log_ns, msg in msgs:
        if msgtype == io.IMAGE_TYPE:
            assert stamp_to_ns(msg.header.stamp) == log_ns
            assert msg.encoding == "rgb8" and msg.step == msg.width * 3
            by_stamp[(topic, log_ns)] = msg
    for row, rec in zip(labels, records):
        left = by_stamp[("/left/image_raw", row.left_stamp_ns)]
        right = by_stamp[("/right/image_raw", row.right_stamp_ns)]
        assert left.header.frame_id == "left_fundus_camera" and right.header.frame_id == "right_fundus_camera"
        np.testing.assert_array_equal(left.data.reshape(left.height, left.width, 3), load_rgb(rec.left_path))
        np.testing.assert_array_equal(right.data.reshape(right.height, right.width, 3), load_rgb(rec.right_path))
    # each exam id is logged before the two eyes of its patient, after the previous patient's
    order = [(m.data if mt == io.STRING_TYPE else t) for t, mt, _, m in msgs]
    assert order[0::3] == [r.exam_id for r in labels]


def test_compressed_sqlite3_carries_source_jpeg_bytes(records, tmp_path):
    make_bag(records[:3], tmp_path / "bag", storage="sqlite3", compressed=True)
    assert list((tmp_path / "bag").glob("*.db3"))
    msgs = [m for m in _read_all(tmp_path / "bag") if m[1] == io.COMPRESSED_IMAGE_TYPE]
    assert {m[0] for m in msgs} == {"/left/image_raw/compressed", "/right/image_raw/compressed"}
    lefts = [m[3] for m in msgs if m[0].startswith("/left")]
    for msg, rec in zip(lefts, records):
        assert msg.format == "rgb8; jpeg compressed bgr8"
        assert bytes(msg.data) == Path(rec.left_path).read_bytes()
        decoded = cv2.cvtColor(cv2.imdecode(msg.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(decoded, load_rgb(rec.left_path))


def test_sequential_acquisition_delay_jitter_and_seed():
    model = AcquisitionModel(mode="sequential", period_s=3.0, eye_delay_s=0.4, jitter_s=0.2, seed=7)
    stamps = model.stamps(50)
    delays = np.array([(r - l) / 1e9 for l, r in stamps])
    assert np.all(delays >= 0.2 - 1e-9) and np.all(delays <= 0.6 + 1e-9) and delays.std() > 0.05
    assert np.allclose(np.diff([l for l, _ in stamps]) / 1e9, 3.0)
    assert model.stamps(50) == stamps
    assert AcquisitionModel(mode="sequential", period_s=3.0, eye_delay_s=0.4, jitter_s=0.2, seed=8).stamps(50) != stamps
    assert all(left == right for left, right in AcquisitionModel(mode="simultaneous").stamps(3))


def test_acquisition_refuses_period_that_mixes_patients():
    with pytest.raises(io.BagError, match="raise --period"):
        AcquisitionModel(mode="sequential", period_s=1.0, eye_delay_s=0.5, jitter_s=0.1)


def test_cli_make_subset_and_limit(tmp_path, capsys):
    ids = [r.patient_id for r in load_odir(SUBSET_DIR / "labels.csv").records[10:14]]
    rc = cli.main(["make", "-q", str(SUBSET_DIR), str(tmp_path / "bag"), "--patients", ",".join(ids), "--limit", "3",
                   "--acquisition", "sequential", "--eye-delay", "0.3", "--jitter", "0.05", "--left-topic", "cam/l",
                   "--compressed"])
    assert rc == 0
    labels = io.read_labels_sidecar(tmp_path / "bag" / "labels.csv")
    assert [r.patient_id for r in labels] == ids[:3]
    assert all(0.25e9 <= r.right_stamp_ns - r.left_stamp_ns <= 0.35e9 for r in labels)
    with io.BagReader(tmp_path / "bag") as reader:
        assert reader.find_image_topic("cam/l", "--left-topic").topic == "/cam/l/compressed"
    assert "3 patients" in capsys.readouterr().out


# ---------------------------------------------------------------- broken inputs, one line each


@pytest.fixture(scope="module")
def small_bags(records, tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return {s: make_bag(records[:2], root / s, storage=s).bag for s in ("mcap", "sqlite3")}


def _one_line_error(fn) -> str:
    with pytest.raises(io.BagError) as exc:
        fn()
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def _read_images(bag: Path) -> int:
    with io.BagReader(bag) as reader:
        left = reader.find_image_topic("left/image_raw", "--left-topic")
        return sum(1 for _ in reader.messages([left]))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_errors_clearly(small_bags, storage, tmp_path):
    assert _read_images(small_bags[storage]) == 2
    bag = shutil.copytree(small_bags[storage], tmp_path / "cut")
    data = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    os.truncate(data, data.stat().st_size // 2)
    msg = _one_line_error(lambda: _read_images(bag))
    assert "truncated or corrupt" in msg and str(bag) in msg


def test_missing_metadata_and_missing_bag(small_bags, tmp_path):
    bag = shutil.copytree(small_bags["mcap"], tmp_path / "nometa")
    (bag / "metadata.yaml").unlink()
    msg = _one_line_error(lambda: _read_images(bag))
    assert "no metadata.yaml" in msg and ".mcap" in msg
    assert "does not exist" in _one_line_error(lambda: _read_images(tmp_path / "nothing"))


def test_foreign_bag_lists_its_topics(tmp_path):
    with io.BagWriter(tmp_path / "foreign", "mcap") as writer:
        writer.write("/camera/color", io.IMAGE_TYPE, 1, io.make_image(np.zeros((2, 2, 3), np.uint8), 1, "cam"))
        writer.write("/chatter", io.STRING_TYPE, 2, io.make_string("hi"))
    msg = _one_line_error(lambda: _read_images(tmp_path / "foreign"))
    assert "'left/image_raw'" in msg and "/camera/color [sensor_msgs/msg/Image]" in msg and "/chatter" in msg
    assert "--left-topic" in msg


def test_missing_labels_sidecar_and_bad_columns(small_bags, tmp_path):
    bag = shutil.copytree(small_bags["mcap"], tmp_path / "nolabels")
    (bag / io.LABELS_FILENAME).unlink()
    msg = _one_line_error(lambda: io.find_labels_sidecar(bag))
    assert "--labels" in msg and "labels.csv" in msg
    (tmp_path / "nolabels.labels.csv").write_text((small_bags["mcap"] / io.LABELS_FILENAME).read_text())
    assert io.find_labels_sidecar(bag) == tmp_path / "nolabels.labels.csv"
    (tmp_path / "bad.csv").write_text("patient_id,N\n1,0\n")
    assert "lacks columns" in _one_line_error(lambda: io.read_labels_sidecar(tmp_path / "bad.csv"))


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    rc = cli.main(["make", "-q", str(tmp_path / "no_dataset"), str(tmp_path / "bag")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("dms-net-bag: error:") and "\n" not in err and "does not exist" in err


def test_sidecar_columns_are_the_documented_contract(small_bags):
    header = (small_bags["mcap"] / io.LABELS_FILENAME).read_text().splitlines()[0].split(",")
    assert header == ["patient_id", "exam_id", "left_stamp_ns", "right_stamp_ns", "left_file", "right_file",
                      *CLASS_CODES, "left_keywords", "right_keywords"]
