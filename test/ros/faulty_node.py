"""The diagnosis node with one injected bug, for the test that an unexpected exception in pair
processing still ends as a counted ERROR result (issue 16, item 1).

Every bad input we know of is handled before it can raise, so a real trigger for "a bug we
did not foresee" cannot be sent from outside; this wrapper makes preparing any eye image
exactly 257 px wide raise, and otherwise runs the real node (`dms_net_ros.node.main`).

    python -m test.ros.faulty_node --ros-args ...
"""

from __future__ import annotations

import sys

from dms_net_core import exam_pipeline
from dms_net_ros.node import main

TRIGGER_WIDTH = 257
_real_prepare = exam_pipeline.prepare_network_eye


def _prepare_or_fail(frame, cfg):
    if frame.rgb.shape[1] == TRIGGER_WIDTH:
        raise RuntimeError(f"injected failure for a {TRIGGER_WIDTH} px wide image")
    return _real_prepare(frame, cfg)


exam_pipeline.prepare_network_eye = _prepare_or_fail

if __name__ == "__main__":
    sys.exit(main())
