"""Launch the DMS-Net diagnosis lifecycle node (ROS 2 Humble/Jazzy/Kilted with launch_ros).

    ros2 launch dms_net_ros diagnose.launch.py namespace:=exam_room \\
        left_topic:=/fundus/left/image_raw right_topic:=/fundus/right/image_raw qos:=reliable

Parameters come from ``params_file`` (default: the package's config/diagnose.yaml); a launch
argument that is given overrides the file, and omitting it keeps the file's value (an empty
value cannot be passed on the command line). What each argument means and how its value is
checked lives in ``dms_net_ros/launch_arguments.py``; a value that cannot be used (e.g.
``autostart:=yes``) stops the launch with one line naming the fix. With ``autostart:=false``
the node waits unconfigured for a lifecycle manager (e.g. nav2_lifecycle_manager or
``ros2 lifecycle set /<ns>/dms_net_diagnosis configure``). ``display:=true`` also starts the
clinician display (``dms_net_display``, a web page on ``display_host:display_port``, default
127.0.0.1:8080) in the same namespace with the same topic remaps.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from dms_net_ros.display.parameters import DISPLAY_NODE_NAME
from dms_net_ros.launch_arguments import (
    DISPLAY_ARGUMENTS,
    NAMESPACE_DESCRIPTION,
    OMITTED,
    PARAMETER_ARGUMENTS,
    PARAMS_FILE_DESCRIPTION,
    REMAP_ARGUMENTS,
    check_not_quoted_empty,
    display_parameters,
    parameter_overrides,
    topic_remappings,
)
from dms_net_ros.node_parameters import NODE_NAME


def _node(context, *args, **kwargs):
    """The node (and the display with ``display:=true``), from the performed argument values
    (raises LaunchArgumentError on a bad one)."""
    names = [a.name for a in PARAMETER_ARGUMENTS] + list(REMAP_ARGUMENTS) + list(DISPLAY_ARGUMENTS)
    values = {name: LaunchConfiguration(name).perform(context) for name in names}
    namespace = LaunchConfiguration("namespace").perform(context)
    check_not_quoted_empty("namespace", namespace)
    display = display_parameters(values)
    extra = [] if display is None else [
        Node(
            package="dms_net_ros",
            executable="display",
            name=DISPLAY_NODE_NAME,
            namespace=namespace,
            parameters=[display],
            remappings=topic_remappings(values),
            output="screen",
            emulate_tty=True,
        )
    ]
    return [
        LifecycleNode(
            package="dms_net_ros",
            executable="diagnose",
            name=NODE_NAME,
            namespace=namespace,
            parameters=[LaunchConfiguration("params_file"), parameter_overrides(values)],
            remappings=topic_remappings(values),
            output="screen",
            emulate_tty=True,
        )
    ] + extra


def generate_launch_description() -> LaunchDescription:
    default_params = [FindPackageShare("dms_net_ros"), "/config/diagnose.yaml"]
    args = [
        DeclareLaunchArgument("namespace", default_value=OMITTED, description=NAMESPACE_DESCRIPTION),
        DeclareLaunchArgument("params_file", default_value=default_params, description=PARAMS_FILE_DESCRIPTION),
    ]
    args += [DeclareLaunchArgument(name, default_value=OMITTED, description=desc)
             for name, (_, desc) in REMAP_ARGUMENTS.items()]
    args += [DeclareLaunchArgument(a.name, default_value=OMITTED, description=a.full_description)
             for a in PARAMETER_ARGUMENTS]
    args += [DeclareLaunchArgument(name, default_value=OMITTED, description=f"{desc} (default {default or 'empty'})")
             for name, (default, desc) in DISPLAY_ARGUMENTS.items()]
    return LaunchDescription(args + [OpaqueFunction(function=_node)])
