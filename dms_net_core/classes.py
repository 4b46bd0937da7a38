"""The eight ODIR-5K diagnostic classes, in the official column order.

Every label matrix, probability vector, threshold list and message field in this project
uses this order (N D G C A H M O), so it is defined once here.
"""

from __future__ import annotations

CLASS_CODES: tuple[str, ...] = ("N", "D", "G", "C", "A", "H", "M", "O")

CLASS_NAMES: tuple[str, ...] = (
    "Normal",
    "Diabetic retinopathy",
    "Glaucoma",
    "Cataract",
    "Age-related macular degeneration",
    "Hypertensive retinopathy",
    "Pathological myopia",
    "Other diseases/abnormalities",
)

NUM_CLASSES: int = len(CLASS_CODES)

#: Index of the "Normal" class: a patient is referable when any *other* class is positive.
NORMAL_INDEX: int = 0
