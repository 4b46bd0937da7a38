"""The display node's name and parameters (one table: the node declares them from it and the
README's table lists the same names and defaults; no rclpy)."""

from __future__ import annotations

from dms_net_ros.node_parameters import ParamSpec

DISPLAY_NODE_NAME = "dms_net_display"

DISPLAY_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("host", "127.0.0.1", "address the web server binds; not a loopback address needs token or token_file"),
    ParamSpec("port", 8080, "TCP port of the web page; 0 picks a free port (the URL is logged)"),
    ParamSpec("token", "", "shared secret every request must carry (?token=, Authorization: Bearer, "
                           "or the page's cookie); empty: none"),
    ParamSpec("token_file", "", "file whose first line is the token (keeps it out of the process list); "
                                "used when token is empty"),
    ParamSpec("history", 20, "exams kept in memory and listed on the page (the oldest is forgotten)"),
    ParamSpec("image_buffer", 8, "recent frames kept per image topic until a result names their stamp"),
    ParamSpec("image_transport", "raw", "raw: <eye>/image_raw; compressed: <eye>/image_raw/compressed"),
    ParamSpec("image_qos", "sensor_data", "eye image subscriptions: sensor_data (best effort, matches any camera) "
                                          "| reliable"),
    ParamSpec("max_image_side", 1024, "photographs are scaled down to this many pixels on their long side "
                                      "for the page"),
    ParamSpec("jpeg_quality", 90, "JPEG quality of the images the page gets"),
    ParamSpec("save_images", False, "also write each exam's JPEGs to save_dir "
                                    "(off: patient images stay in memory only)"),
    ParamSpec("save_dir", "display_images", "folder for save_images"),
)
