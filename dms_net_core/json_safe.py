"""Values made fit for JSON, the one place for it: numpy scalars and arrays, tensors and paths.

Two forms, for two uses: `json_default` is ``json.dumps(..., default=json_default)`` for reports
(numpy values and paths converted, anything else refused); `json_safe` converts a whole
structure up front for a file that must be strict JSON (model.json: a non-finite float, which
JSON cannot hold, becomes null) or for a page (`finite_or_none`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for reports: numpy scalars/arrays and paths; anything else fails."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def json_safe(value: Any) -> Any:
    """``value`` with dict keys as strings, tuples as lists, numpy scalars/arrays and tensors as
    plain numbers/lists (``tolist``), paths as strings and a non-finite float as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return finite_or_none(value) if isinstance(value, float) else value


def finite_or_none(value: Any) -> float | None:
    """``float(value)``, or None when it is NaN or infinite (JSON has neither)."""
    v = float(value)
    return v if math.isfinite(v) else None
