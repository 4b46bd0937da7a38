"""launch/diagnose.launch.py and what the README says about it, checked without launch_ros
(the real `ros2 launch` runs are in test_ros2_launch.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "diagnose.launch.py"
README = REPO / "docs" / "robot.md"  # linked from the README; the robot commands live there


def _readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_launch_starts_the_installed_lifecycle_node():
    calls = [n for n in ast.walk(ast.parse(LAUNCH.read_text()))
             if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "LifecycleNode"]
    assert len(calls) == 1
    kw = {k.arg: k.value for k in calls[0].keywords}
    assert ast.literal_eval(kw["package"]) == "dms_net_ros" and ast.literal_eval(kw["executable"]) == "diagnose"
    assert isinstance(kw["name"], ast.Name) and kw["name"].id == "NODE_NAME"  # the node's own constant
    from dms_net_ros.node_parameters import NODE_NAME

    assert NODE_NAME == "dms_net_diagnosis"
    assert {"namespace", "parameters", "remappings"} <= set(kw)
    # the executable the launch file names, and the demo model its default params file names, are installed
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert "install(PROGRAMS ${CMAKE_CURRENT_BINARY_DIR}/diagnose DESTINATION lib/${PROJECT_NAME})" in cmake
    assert "install(DIRECTORY models/demo DESTINATION share/${PROJECT_NAME}/models)" in cmake
    assert re.search(r"^\s+bundle: models/demo\b", (REPO / "config" / "diagnose.yaml").read_text(), re.MULTILINE)


def test_launch_parameter_arguments_are_node_parameters():
    from dms_net_ros.launch_arguments import PARAMETER_ARGUMENTS
    from dms_net_ros.node_parameters import PARAMETERS

    params = {p.name: p for p in PARAMETERS}
    assert {a.name for a in PARAMETER_ARGUMENTS} <= set(params)
    assert all(isinstance(params[a.name].default, bool) == a.boolean for a in PARAMETER_ARGUMENTS)
    for required in ("bundle", "backend", "image_transport", "qos", "autostart"):
        assert required in {a.name for a in PARAMETER_ARGUMENTS}


def test_readme_robot_section_shows_the_tested_commands_and_the_omit_rule():
    from test.ros.launch_harness import README_COMMANDS

    robot = _readme_section("On a robot")
    flat = re.sub(r"\s*\\\n\s*", " ", robot)  # join shell continuation lines
    for command in README_COMMANDS:
        assert re.search(re.escape(command) + r"\s*(#|$)", flat, re.MULTILINE), command
    assert "empty argument" not in robot and "omit" in robot.lower()
    assert "KillSignal=SIGINT" in robot  # item 5: what a supervisor should do


def test_launch_display_argument_starts_the_installed_display_in_the_same_namespace():
    calls = [n for n in ast.walk(ast.parse(LAUNCH.read_text()))
             if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node"]
    assert len(calls) == 1
    kw = {k.arg: k.value for k in calls[0].keywords}
    assert ast.literal_eval(kw["package"]) == "dms_net_ros" and ast.literal_eval(kw["executable"]) == "display"
    assert isinstance(kw["namespace"], ast.Name) and kw["namespace"].id == "namespace"  # the diagnosis node's
    assert ("install(PROGRAMS ${CMAKE_CURRENT_BINARY_DIR}/display DESTINATION lib/${PROJECT_NAME})"
            in (REPO / "CMakeLists.txt").read_text())
    from dms_net_ros.launch_arguments import DISPLAY_ARGUMENTS

    assert DISPLAY_ARGUMENTS["display"][0] == "false" and DISPLAY_ARGUMENTS["display_host"][0] == "127.0.0.1"
