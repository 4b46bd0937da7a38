"""launch/diagnose.launch.py: structure checked with `ast` (launch_ros is not installable
here) and, where launch_ros exists (a real ROS 2 install), a real launch test."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "diagnose.launch.py"


def _tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def _declared_arguments(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument" and node.args:
            if isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
    ns: dict = {}
    for node in tree.body:  # PARAMETER_ARGUMENTS keys become arguments too
        if isinstance(node, ast.AnnAssign | ast.Assign) and "PARAMETER_ARGUMENTS" in ast.unparse(node):
            exec(compile(ast.Module([node], []), "x", "exec"), ns)
    return names | set(ns.get("PARAMETER_ARGUMENTS", {}))


def test_launch_declares_the_integrator_arguments():
    args = _declared_arguments(_tree())
    for required in ("namespace", "params_file", "bundle", "backend", "image_transport", "qos", "autostart", "left_topic", "right_topic"):
        assert required in args, required


def test_launch_starts_the_lifecycle_node_with_remaps():
    tree = _tree()
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "LifecycleNode"]
    assert len(calls) == 1
    kw = {k.arg: k.value for k in calls[0].keywords}
    assert ast.literal_eval(kw["package"]) == "dms_net_ros" and ast.literal_eval(kw["executable"]) == "diagnose"
    assert ast.literal_eval(kw["name"]) == "dms_net_diagnosis"
    assert {"namespace", "parameters", "remappings"} <= set(kw)
    src = LAUNCH.read_text()
    for topic in ('f"{eye}/image_raw"', 'f"{eye}/image_raw/compressed"', '"diagnosis"'):
        assert topic in src
    # the executable the launch file names is the one CMake installs
    assert "install(PROGRAMS ${CMAKE_CURRENT_BINARY_DIR}/diagnose DESTINATION lib/${PROJECT_NAME})" in (REPO / "CMakeLists.txt").read_text()


def test_launch_parameter_arguments_are_node_parameters():
    from dms_net_ros.node import PARAMETERS  # noqa: F401 - needs rclpy, like the node

    ns: dict = {}
    for node in _tree().body:
        if isinstance(node, ast.Assign) and "PARAMETER_ARGUMENTS" in ast.unparse(node.targets[0]):
            exec(compile(ast.Module([node], []), "x", "exec"), ns)
    assert set(ns["PARAMETER_ARGUMENTS"]) <= {p.name for p in PARAMETERS}


@pytest.mark.ros
@pytest.mark.skipif(
    importlib.util.find_spec("launch_ros") is None,
    reason="launch_ros is not installable from PyPI (see ros2-on-pypi.md); runs on a real ROS 2 install",
)
def test_launch_description_builds_on_a_real_install(tmp_path):
    from launch import LaunchContext, LaunchDescription

    spec = importlib.util.spec_from_file_location("diagnose_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    context = LaunchContext()
    for action in ld.entities[:-1]:
        action.visit(context)
    context.launch_configurations.update({"params_file": str(REPO / "config" / "diagnose.yaml"), "left_topic": "/cam/l"})
    (node,) = module._node(context)
    assert ("left/image_raw", "/cam/l") in [tuple(r) for r in node._Node__remappings]
