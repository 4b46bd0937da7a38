"""`dms_net_core.json_safe`: the one conversion of numpy values, tensors and paths for JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dms_net_core.json_safe import finite_or_none, json_default, json_safe


def test_json_safe_makes_strict_json():
    value = {1: (np.float32(0.5), np.arange(2)), "p": Path("/a"), "nan": math.nan, "inf": -math.inf, "n": None}
    safe = json_safe(value)
    assert safe == {"1": [0.5, [0, 1]], "p": "/a", "nan": None, "inf": None, "n": None}
    json.dumps(safe, allow_nan=False)


def test_json_default_converts_numpy_and_paths_and_refuses_the_rest():
    text = json.dumps({"a": np.int64(3), "b": np.zeros(2, np.float32), "c": Path("x")}, default=json_default)
    assert json.loads(text) == {"a": 3, "b": [0.0, 0.0], "c": "x"}
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        json.dumps(object(), default=json_default)


def test_finite_or_none():
    assert finite_or_none(np.float32(0.25)) == 0.25
    assert finite_or_none(float("nan")) is None and finite_or_none(np.inf) is None
