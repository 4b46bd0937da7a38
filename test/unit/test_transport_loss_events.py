"""Fast DDS's message-lost changes that cannot be counts are not counted (issue 25; no ROS graph)."""

from __future__ import annotations

from dms_net_ros.transport_loss import plausible_lost_change


def test_implausible_message_lost_changes_are_not_counted():
    assert plausible_lost_change(1) == 1 and plausible_lost_change(42) == 42
    assert plausible_lost_change(2**31 - 1) == 0  # what Fast DDS reported for fragmented 50 MB samples
    assert plausible_lost_change(0) == 0 and plausible_lost_change(-3) == 0
