"""Will the largest frame the node accepts survive the transport? (pure Python, no rclpy)

Fast DDS sends a large sample as ~64 KB fragments (the UDP fallback's message size caps the
fragment size for every transport of the participant); over shared memory each fragment is
one descriptor in the receiving participant's port queue (``port_queue_capacity``, Fast DDS
default 512). Both eye subscriptions of the node share that port, so a pair's fragments
must fit into it together. Beyond that a best-effort reader loses fragments, and with them
the frame; nothing resends them. A frame must also fit into the writer's shared-memory
segment. Measured (issue 25, benchmarks/RESULTS.md; 2 cores under load): with the default
512 descriptors (~33 MB) single 38-50 MB frames were lost 50-100 % and a 4100x4100 mono8
pair (2 x 16.8 MB) lost an eye now and then; with 4096-8192 descriptors 50 MB frames arrived
at 10 Hz; a 134 MB frame was lost 3 of 3 with a 64 MB segment and arrived 3 of 3 with
256 MB. A reliable writer resends what was lost, so these limit its rate, not its frames.

Such a loss is counted (``transport_lost_<eye>``) once a later image of that camera arrives,
except for the first images of a camera that was publishing before the node activated: the
sequence numbers cannot tell them from images sent before the node subscribed, and Fast DDS
raises no message-lost event before a writer's first delivered sample. Hence the
configure-time warning (`transport_limit_warning`): one line when ``max_pixels`` admits
frames that the chosen QoS and the Fast DDS profile cannot carry.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Mapping

from dms_net_ros.image_codec import RAW_ENCODINGS

#: RTPS fragment payload with the UDPv4 transport in the participant (its 65500 B limit, less headers).
FRAGMENT_BYTES = 64_000
#: Bytes per pixel of the widest raw encoding the node decodes (rgba16/bgra16: 8).
WIDEST_BYTES_PER_PIXEL = max(e.channels * e.bytes_per_channel for e in RAW_ENCODINGS.values())
#: Fast DDS's shared-memory defaults (no profile, or a profile without an SHM descriptor).
DEFAULT_PORT_QUEUE_CAPACITY = 512
DEFAULT_SEGMENT_SIZE = 512 * 1024


@dataclass(frozen=True)
class SharedMemorySettings:
    segment_size: int = DEFAULT_SEGMENT_SIZE
    port_queue_capacity: int = DEFAULT_PORT_QUEUE_CAPACITY
    source: str = "Fast DDS defaults"

    @property
    def best_effort_frame_bytes(self) -> int:
        """Largest frame of a pair a best-effort node receives whole: half the port queue's
        fragments (both eyes share it), and no more than one segment."""
        return min(self.port_queue_capacity * FRAGMENT_BYTES // 2, self.segment_size)


def shared_memory_settings(profile_file: str | None) -> SharedMemorySettings:
    """The SHM transport's segment size and port queue from a Fast DDS XML profile (defaults where absent)."""
    if not profile_file:
        return SharedMemorySettings()
    try:
        root = ET.parse(profile_file).getroot()
    except (OSError, ET.ParseError):
        return SharedMemorySettings(source=f"{profile_file} (unreadable: Fast DDS defaults assumed)")
    for desc in root.iter():
        if desc.tag.rsplit("}", 1)[-1] != "transport_descriptor":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in desc}
        if fields.get("type", "").upper() == "SHM":
            return SharedMemorySettings(int(fields.get("segment_size") or DEFAULT_SEGMENT_SIZE),
                                        int(fields.get("port_queue_capacity") or DEFAULT_PORT_QUEUE_CAPACITY),
                                        profile_file)
    return SharedMemorySettings(source=f"{profile_file} (no SHM transport: Fast DDS defaults assumed)")


def transport_limit_warning(qos: str, image_transport: str, max_pixels: int,
                            environ: Mapping[str, str] | None = None) -> str | None:
    """One line (cause and fix) when ``max_pixels`` admits raw frames that ``qos`` with the Fast DDS
    profile cannot carry; None when they fit, for compressed images (their size is not known
    in advance) and for QoS reliable (lost fragments are resent)."""
    env = os.environ if environ is None else environ
    if qos != "sensor_data" or image_transport != "raw":
        return None
    if env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        return None
    shm = shared_memory_settings(env.get("FASTDDS_DEFAULT_PROFILES_FILE"))
    largest = int(max_pixels) * WIDEST_BYTES_PER_PIXEL
    carried = shm.best_effort_frame_bytes
    if largest <= carried:
        return None
    fits = carried // WIDEST_BYTES_PER_PIXEL
    return (f"max_pixels={int(max_pixels)} admits frames up to {largest / 1e6:.0f} MB "
            f"({WIDEST_BYTES_PER_PIXEL} B/px encodings) "
            f"but qos sensor_data (best effort) carries a pair's frames only up to ~{carried / 1e6:.0f} MB with "
            f"{shm.port_queue_capacity} shared-memory port descriptors "
            f"and a {shm.segment_size / 2**20:.1f} MiB segment "
            f"({shm.source}); larger frames are lost, "
            f"the first of a camera without a count: use qos:=reliable with a reliable camera, "
            f"FASTDDS_DEFAULT_PROFILES_FILE=<share>/config/fastdds_large_images.xml, or max_pixels<={fits}")
