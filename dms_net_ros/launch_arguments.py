"""What the arguments of ``launch/diagnose.launch.py`` mean and how their values become node
parameters and remaps.

Kept free of ROS imports so the rules are unit tested where ``launch_ros`` is absent, and
read by the launch file so there is one copy of them.

Omitting an argument keeps the params file's value. That is the only way to say "not given":
``ros2 launch`` rejects an empty value (``qos:=`` is a "malformed launch argument"), and a
quoted empty value (``qos:="''"``) reaches the launch file as the two characters ``''``,
which is no valid value of any argument; it is rejected with a line saying to omit the
argument instead. Internally an omitted argument has the default ``""``, which also lets a
parent launch file pass an argument through unchanged (its own empty default means "omitted").

Booleans (``autostart``) are ``true`` or ``false`` in any letter case, as ROS parameters
spell them; anything else (``1``, ``yes``, a typo) is rejected, because treating it as false
would leave the node silently unconfigured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The internal default of every optional argument: only an omitted argument has it.
OMITTED = ""
#: Values that are a shell-quoted empty string passed literally by ``ros2 launch``.
QUOTED_EMPTY = ("''", '""')
BOOLEAN_SPELLINGS = {"true": True, "false": False}

KEEP_PARAMS_FILE = "omit to keep the params file's value"


class LaunchArgumentError(ValueError):
    """A launch argument value that cannot be used; the message names the fix in one line."""


@dataclass(frozen=True)
class ParameterArgument:
    """A launch argument that overrides the node parameter of the same name."""

    name: str
    description: str
    boolean: bool = False

    @property
    def full_description(self) -> str:
        return f"{self.description} ({KEEP_PARAMS_FILE})"


#: Launch arguments that override node parameters (dms_net_ros/node_parameters.py PARAMETERS).
PARAMETER_ARGUMENTS: tuple[ParameterArgument, ...] = (
    ParameterArgument("bundle", "model bundle directory (dms-net-export output); a relative path is looked up in the "
                                "working directory, then in the package's share directory"),
    ParameterArgument("backend", "auto | tensorrt | onnxruntime | torch"),
    ParameterArgument("device", "auto | cpu | cuda"),
    ParameterArgument("precision", "fp32 | fp16"),
    ParameterArgument("torch_accel", "torch on CUDA: none | cuda_graph | compile | compile_cudagraphs"),
    ParameterArgument("image_transport", "raw | compressed"),
    ParameterArgument("qos", "input QoS: sensor_data (best effort) | reliable"),
    ParameterArgument("autostart", "true: configure and activate at start; false: wait for a lifecycle manager "
                                   "(true/false, any letter case)", boolean=True),
    ParameterArgument("exam_id", "exam identifier copied into every result"),
)

#: Launch arguments that remap a relative topic of the node: argument -> (topic, description).
REMAP_ARGUMENTS: dict[str, tuple[str, str]] = {
    "left_topic": ("left/image_raw",
                   "remap left/image_raw (and left/image_raw/compressed) to this topic (omit: no remap)"),
    "right_topic": ("right/image_raw",
                    "remap right/image_raw (and right/image_raw/compressed) to this topic (omit: no remap)"),
    "result_topic": ("diagnosis", "remap the diagnosis output topic to this topic (omit: no remap)"),
}

#: The clinician display beside the node (dms_net_ros/display): argument -> (default, description).
DISPLAY_ARGUMENTS: dict[str, tuple[str, str]] = {
    "display": ("false", "true: also start the clinician display (web page) in the same namespace and with the same "
                         "topic remaps"),
    "display_host": ("127.0.0.1", "address the display binds; not a loopback address needs display_token"),
    "display_port": ("8080", "TCP port of the display's page; 0 picks a free one (its URL is logged)"),
    "display_token": ("", "token the display's page needs (required when display_host is not loopback; empty: none)"),
}

NAMESPACE_DESCRIPTION = "namespace of the node and its relative topics (omit: none)"
PARAMS_FILE_DESCRIPTION = "YAML parameter file (omit: the package's config/diagnose.yaml)"


def check_not_quoted_empty(name: str, value: str) -> None:
    """Reject ``''``/``""``: the old "empty keeps the params file's value" spelling, which
    ``ros2 launch`` passes literally."""
    if value.strip() in QUOTED_EMPTY:
        raise LaunchArgumentError(
            f"{name}:={value} is a quoted empty value, which ros2 launch passes literally: "
            f"omit {name} to keep the params file's value (or its default)"
        )


def parse_boolean(name: str, value: str) -> bool:
    """``true``/``false`` in any letter case; anything else raises a one-line error."""
    try:
        return BOOLEAN_SPELLINGS[value.strip().lower()]
    except KeyError:
        raise LaunchArgumentError(
            f"{name}:={value} is not a boolean: use {name}:=true or {name}:=false (any letter case), "
            f"or omit {name} to keep the params file's value"
        ) from None


def parameter_overrides(values: Mapping[str, str]) -> dict[str, Any]:
    """Node parameter overrides from performed launch argument values.

    Omitted arguments (value ``OMITTED``) are left out, so the params file's value stays.
    """
    overrides: dict[str, Any] = {}
    for arg in PARAMETER_ARGUMENTS:
        value = values.get(arg.name, OMITTED)
        if value == OMITTED:
            continue
        check_not_quoted_empty(arg.name, value)
        overrides[arg.name] = parse_boolean(arg.name, value) if arg.boolean else value
    return overrides


def topic_remappings(values: Mapping[str, str]) -> list[tuple[str, str]]:
    """Remaps from the ``*_topic`` arguments; an eye's compressed topic follows its raw one."""
    remappings: list[tuple[str, str]] = []
    for name, (topic, _) in REMAP_ARGUMENTS.items():
        target = values.get(name, OMITTED)
        if target == OMITTED:
            continue
        check_not_quoted_empty(name, target)
        remappings.append((topic, target))
        if topic.endswith("/image_raw"):
            remappings.append((topic + "/compressed", target + "/compressed"))
    return remappings


def display_parameters(values: Mapping[str, str]) -> dict[str, Any] | None:
    """The display node's parameters, or None when ``display`` is false."""
    get = lambda name: values.get(name, OMITTED) or DISPLAY_ARGUMENTS[name][0]  # noqa: E731
    check_not_quoted_empty("display", get("display"))
    if not parse_boolean("display", get("display")):
        return None
    port = get("display_port")
    if not port.strip().isdigit() or int(port) > 65535:
        raise LaunchArgumentError(f"display_port:={port} is not a TCP port: use 0..65535 (0 picks a free port)")
    params: dict[str, Any] = {"host": get("display_host"), "port": int(port)}
    if values.get("display_token", OMITTED):
        params["token"] = values["display_token"]
    return params
