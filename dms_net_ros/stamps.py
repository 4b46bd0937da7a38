"""ROS time stamps as integer nanoseconds, the one conversion every part of the package uses.

Duck-typed (any object with ``sec``/``nanosec``: an rclpy ``builtin_interfaces/Time``, a
`rosbags` one, a test double), so the node, the bag tools and the display share it without
importing rclpy or rosbags.
"""

from __future__ import annotations

from typing import Any


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (any object with sec/nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
