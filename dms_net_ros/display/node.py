"""The clinician display node ``dms_net_display``: the diagnosis node's topics -> a web page.

Run it in the diagnosis node's namespace (``-r __ns:=/demo``, or the launch file's
``display:=true``); every topic is relative: ``diagnosis``, ``left|right/image_raw`` (or
``/compressed``), ``left|right/attention``, plus ``/diagnostics`` (statuses of nodes in this
namespace only). Callbacks run on the rclpy executor and only match and encode (`ExamStore`);
the web server (`server.DisplayServer`) runs in its own asyncio thread and gets JSON-safe
dicts through its thread-safe `publish`. The node logs one line with its URL at start; a
configuration it refuses (non-loopback host without token, a busy port) is one error line
and exit code 2.
"""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from dms_net_core.errors import first_line
from dms_net_ros.display.exam_store import ExamStore
from dms_net_ros.display.parameters import DISPLAY_NODE_NAME, DISPLAY_PARAMETERS
from dms_net_ros.display.result_json import diagnostic_dicts, result_dict
from dms_net_ros.display.security import DisplayConfigError, is_loopback, read_token
from dms_net_ros.display.server import DisplayServer
from dms_net_ros.image_codec import ImageDecodeError, msg_to_rgb
from dms_net_ros.msg import DiagnosisResult
from dms_net_ros.stamps import stamp_to_ns


def encode_jpeg(rgb: np.ndarray, max_side: int, quality: int) -> bytes:
    """RGB -> JPEG bytes, scaled down (never up) to ``max_side`` on the long side."""
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if 0 < scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageDecodeError("cv2.imencode could not write a JPEG")
    return buf.tobytes()


class DisplayNode(Node):
    """Subscribes to one diagnosis node's topics and serves the clinician page."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(DISPLAY_NODE_NAME, **kwargs)
        for spec in DISPLAY_PARAMETERS:
            self.declare_parameter(spec.name, spec.default, ParameterDescriptor(description=spec.description))
        p = {spec.name: self.get_parameter(spec.name).value for spec in DISPLAY_PARAMETERS}
        self._p = p
        if p["image_transport"] not in ("raw", "compressed"):
            raise DisplayConfigError(f"image_transport must be 'raw' or 'compressed', got {p['image_transport']!r}")
        if p["image_qos"] not in ("sensor_data", "reliable"):
            raise DisplayConfigError(f"image_qos must be 'sensor_data' or 'reliable', got {p['image_qos']!r}")
        token = read_token(str(p["token"]), str(p["token_file"]))
        self.store = ExamStore(history=int(p["history"]), buffer=int(p["image_buffer"]))
        ns = self.get_namespace()
        self._prefix = ns.rstrip("/") + "/"
        info = {"namespace": ns, "history": int(p["history"]), "node": self.get_fully_qualified_name()}
        self.server = DisplayServer(self.store, str(p["host"]), int(p["port"]), token, info=info)
        self._health: dict[str, dict[str, Any]] = {}
        self._save_dir = Path(str(p["save_dir"])) if p["save_images"] else None

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        images = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=4,
                            reliability=(ReliabilityPolicy.RELIABLE if p["image_qos"] == "reliable"
                                         else ReliabilityPolicy.BEST_EFFORT))
        compressed = p["image_transport"] == "compressed"
        kind_type, suffix = (CompressedImage, "/image_raw/compressed") if compressed else (Image, "/image_raw")
        self.create_subscription(DiagnosisResult, "diagnosis", self._on_result, reliable)
        for eye in ("left", "right"):
            self.create_subscription(kind_type, eye + suffix, lambda m, k=eye: self._on_image(k, m), images)
            self.create_subscription(Image, f"{eye}/attention", lambda m, k=f"{eye}_attention": self._on_image(k, m),
                                     reliable)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._result_topic = self.resolve_topic_name("diagnosis")
        self._publishers_seen = 0
        self._silent_since = time.monotonic()
        self.create_timer(1.0, self._watch_result_publishers)

    def _watch_result_publishers(self) -> None:
        """Say when a diagnosis node appears or goes (the usual mistake: another namespace or
        ROS_DOMAIN_ID); warn once after 10 s without one."""
        n = self.count_publishers(self._result_topic)
        if n and not self._publishers_seen:
            self.get_logger().info(f"receiving results: {n} publisher(s) on {self._result_topic}")
        elif not n and self._publishers_seen:
            self.get_logger().warning(f"no publisher on {self._result_topic} any more: the diagnosis node stopped?")
            self._silent_since = time.monotonic()
        elif not n and self._silent_since is not None and time.monotonic() - self._silent_since > 10.0:
            self.get_logger().warning(f"no publisher on {self._result_topic} after 10 s: "
                                      "start the diagnosis node in this namespace and ROS_DOMAIN_ID, "
                                      "or run the display with -r __ns:=<its namespace>")
            self._silent_since = None
        self._publishers_seen = n

    def start_server(self) -> str:
        url = self.server.start()
        host = str(self._p["host"])
        access = "loopback only" if is_loopback(host) else "reachable from the network"
        tokened = "token required (?token=...)" if self.server.token else "no token"
        self.get_logger().info(f"display at {url} ({access}, {tokened}); "
                               f"showing {self.resolve_topic_name('diagnosis')}")
        return url

    # -- callbacks (executor thread) ----------------------------------------------------
    def _encode(self, msg: Any) -> bytes | None:
        try:
            rgb = msg_to_rgb(msg, copy=False)
            return encode_jpeg(rgb, int(self._p["max_image_side"]), int(self._p["jpeg_quality"]))
        except (ImageDecodeError, cv2.error) as exc:
            self.get_logger().warning(f"image not shown ({first_line(exc)})", throttle_duration_sec=5.0)
            return None

    def _on_result(self, msg: Any) -> None:
        exam = self.store.add_result(result_dict(msg), stamp_to_ns(msg.left_stamp), stamp_to_ns(msg.right_stamp),
                                     self._encode)
        self._save(exam)
        self.server.publish({"type": "exam", "exam": exam.summary()})

    def _on_image(self, kind: str, msg: Any) -> None:
        exam = self.store.add_image(kind, stamp_to_ns(msg.header.stamp), msg, self._encode)
        if exam is not None:
            self._save(exam)
            self.server.publish({"type": "exam", "exam": exam.summary()})

    def _on_diagnostics(self, msg: Any) -> None:
        statuses = diagnostic_dicts(msg, self._prefix)
        if not statuses:
            return
        for status in statuses:
            self._health[status["name"]] = status
        self.server.publish({"type": "health", "health": list(self._health.values())})

    def _save(self, exam: Any) -> None:
        """Only with save_images: the exam's JPEGs under save_dir (never by default)."""
        if self._save_dir is None:
            return
        self._save_dir.mkdir(parents=True, exist_ok=True)
        safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", exam.data.get("exam_id") or "no-id")[:64]
        for kind, jpeg in list(exam.images.items()):
            path = self._save_dir / f"{exam.index:05d}_{safe_id}_{kind}.jpg"
            if not path.exists():
                path.write_bytes(jpeg)

    def destroy_node(self) -> None:
        self.server.stop()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """``dms-net-display`` / ``ros2 run dms_net_ros display --ros-args -r __ns:=/demo -p port:=8080``."""
    rclpy.init(args=sys.argv if argv is None else argv)
    node = None
    try:
        node = DisplayNode()
        node.start_server()
        rclpy.spin(node)
    except (DisplayConfigError, OSError) as exc:
        (node.get_logger() if node is not None
         else rclpy.logging.get_logger(DISPLAY_NODE_NAME)).error(f"display not started: {exc}")
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C during clean-up (see dms_net_ros.node)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
