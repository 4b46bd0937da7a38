"""The configure-time warning for frames the transport cannot carry (issue 25; no ROS graph)."""

from __future__ import annotations

from pathlib import Path

from dms_net_ros.frame_size_limit import (
    DEFAULT_PORT_QUEUE_CAPACITY,
    FRAGMENT_BYTES,
    WIDEST_BYTES_PER_PIXEL,
    shared_memory_settings,
    transport_limit_warning,
)
from dms_net_ros.image_codec import DecodeSettings

SHIPPED = str(Path(__file__).resolve().parents[2] / "config" / "fastdds_large_images.xml")
DEFAULT_MAX_PIXELS = DecodeSettings.max_pixels


def _env(profile: str | None) -> dict[str, str]:
    env = {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    return env


def _profile(tmp_path: Path, shm: str) -> str:
    path = tmp_path / "profile.xml"
    path.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns="http://www.eprosima.com"><profiles><transport_descriptors>
  <transport_descriptor><transport_id>shm</transport_id><type>SHM</type>{shm}</transport_descriptor>
  <transport_descriptor><transport_id>udp</transport_id><type>UDPv4</type></transport_descriptor>
</transport_descriptors></profiles></dds>""")
    return str(path)


def test_the_shipped_profile_carries_the_default_max_pixels_under_best_effort():
    shm = shared_memory_settings(SHIPPED)
    assert shm.source == SHIPPED and shm.segment_size == 256 * 2**20 and shm.port_queue_capacity == 8192
    assert shm.best_effort_frame_bytes >= DEFAULT_MAX_PIXELS * WIDEST_BYTES_PER_PIXEL
    assert transport_limit_warning("sensor_data", "raw", DEFAULT_MAX_PIXELS, _env(SHIPPED)) is None


def test_fast_dds_defaults_warn_once_with_cause_and_fix():
    line = transport_limit_warning("sensor_data", "raw", DEFAULT_MAX_PIXELS, _env(None))
    assert line is not None and "\n" not in line
    carried = shared_memory_settings(None).best_effort_frame_bytes
    assert carried == min(DEFAULT_PORT_QUEUE_CAPACITY * FRAGMENT_BYTES // 2, 512 * 1024)  # the 512 KB default segment
    assert f"~{carried / 1e6:.0f} MB" in line and "Fast DDS defaults" in line
    assert "max_pixels=16777216 admits frames up to 134 MB" in line
    assert "qos:=reliable" in line and "fastdds_large_images.xml" in line
    fits = carried // WIDEST_BYTES_PER_PIXEL
    assert f"max_pixels<={fits}" in line
    assert transport_limit_warning("sensor_data", "raw", fits, _env(None)) is None  # the advice is enough
    assert transport_limit_warning("sensor_data", "raw", fits + 1, _env(None)) is not None


def test_a_profile_with_the_default_port_queue_warns(tmp_path):
    """The profile shipped before issue 25 (64 MB segment, default 512-descriptor port queue)."""
    old = _profile(tmp_path, "<segment_size>67108864</segment_size><maxMessageSize>4194304</maxMessageSize>")
    line = transport_limit_warning("sensor_data", "raw", DEFAULT_MAX_PIXELS, _env(old))
    assert line is not None and "512 shared-memory port descriptors" in line and old in line
    queue_only = _profile(tmp_path,
                          "<segment_size>67108864</segment_size><port_queue_capacity>8192</port_queue_capacity>")
    line = transport_limit_warning("sensor_data", "raw", DEFAULT_MAX_PIXELS, _env(queue_only))
    assert line is not None and "~67 MB" in line and "64.0 MiB segment" in line  # a 134 MB frame needs a bigger segment
    both = _profile(tmp_path, "<segment_size>268435456</segment_size><port_queue_capacity>8192</port_queue_capacity>")
    assert transport_limit_warning("sensor_data", "raw", DEFAULT_MAX_PIXELS, _env(both)) is None


def test_no_warning_where_the_limit_does_not_apply(tmp_path):
    # lost fragments are resent
    assert transport_limit_warning("reliable", "raw", DEFAULT_MAX_PIXELS, _env(None)) is None
    assert transport_limit_warning("sensor_data", "compressed", DEFAULT_MAX_PIXELS, _env(None)) is None
    other_rmw = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert transport_limit_warning("sensor_data", "raw", DEFAULT_MAX_PIXELS, other_rmw) is None


def test_an_unreadable_or_shm_less_profile_assumes_fast_dds_defaults(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<dds><profiles>")
    assert shared_memory_settings(str(broken)).port_queue_capacity == DEFAULT_PORT_QUEUE_CAPACITY
    assert "unreadable" in shared_memory_settings(str(broken)).source
    assert "unreadable" in shared_memory_settings(str(tmp_path / "missing.xml")).source
    udp_only = tmp_path / "udp.xml"
    udp_only.write_text('<dds xmlns="http://www.eprosima.com"><profiles><transport_descriptors><transport_descriptor>'
                        "<transport_id>u</transport_id><type>UDPv4</type></transport_descriptor></transport_descriptors></profiles></dds>")
    assert "no SHM transport" in shared_memory_settings(str(udp_only)).source
