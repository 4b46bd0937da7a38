"""Synthetic fundus data: readable by the real loader, gradable, deterministic; numpy augment."""

from __future__ import annotations

import numpy as np

from dms_net_core.data.augment import augment_eye
from dms_net_core.data.odir import labels_matrix, load_odir
from dms_net_core.data.quality import assess_quality
from dms_net_core.data.synthetic import synthetic_fundus, synthetic_labels, write_synthetic_dataset


def test_synthetic_dataset_round_trips_through_loader(tmp_path):
    csv = write_synthetic_dataset(tmp_path, n=6, size=96, seed=1)
    res = load_odir(csv)
    assert len(res.records) == 6
    np.testing.assert_array_equal(labels_matrix(res.records), synthetic_labels(6, 1))


def test_synthetic_images_are_deterministic_and_gradable():
    y = synthetic_labels(4, 0)
    a = synthetic_fundus(y[0], 128, seed=5)
    np.testing.assert_array_equal(a, synthetic_fundus(y[0], 128, seed=5))
    assert assess_quality(synthetic_fundus(y[1], 256, seed=1)).gradable


def test_augment_eye_keeps_shape_and_black_border():
    img = synthetic_fundus(synthetic_labels(1, 0)[0], 64, seed=0)
    out = augment_eye(img, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out[0, 0].max() < 30  # corners stay (near) black like outside the FOV
