"""Launch the DMS-Net diagnosis lifecycle node (ROS 2 Humble/Jazzy/Kilted with launch_ros).

    ros2 launch dms_net_ros diagnose.launch.py namespace:=exam_room bundle:=/opt/models/dms-net \\
        left_topic:=/fundus/left/image_raw right_topic:=/fundus/right/image_raw qos:=reliable

Parameters come from ``params_file`` (default: the package's config/diagnose.yaml); every
non-empty launch argument below overrides the file. With ``autostart:=false`` the node
waits unconfigured for a lifecycle manager (e.g. nav2_lifecycle_manager or
``ros2 lifecycle set /<ns>/dms_net_diagnosis configure``).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare

#: launch argument -> node parameter it overrides (empty value = keep the params file's)
PARAMETER_ARGUMENTS = {
    "bundle": "model bundle directory (dms-net-export output)",
    "backend": "auto | tensorrt | onnxruntime | torch",
    "device": "auto | cpu | cuda",
    "precision": "fp32 | fp16",
    "torch_accel": "torch on CUDA: none | cuda_graph | compile | compile_cudagraphs",
    "image_transport": "raw | compressed",
    "qos": "sensor_data | reliable",
    "autostart": "true: configure+activate at start; false: wait for a lifecycle manager",
    "exam_id": "exam identifier copied into every result",
}
BOOL_PARAMETERS = {"autostart"}


def _node(context, *args, **kwargs):
    overrides = {}
    for name in PARAMETER_ARGUMENTS:
        value = LaunchConfiguration(name).perform(context)
        if value != "":
            overrides[name] = value.lower() == "true" if name in BOOL_PARAMETERS else value
    remappings = []
    for eye in ("left", "right"):
        topic = LaunchConfiguration(f"{eye}_topic").perform(context)
        if topic:
            remappings += [(f"{eye}/image_raw", topic), (f"{eye}/image_raw/compressed", topic + "/compressed")]
    result_topic = LaunchConfiguration("result_topic").perform(context)
    if result_topic:
        remappings.append(("diagnosis", result_topic))
    return [
        LifecycleNode(
            package="dms_net_ros",
            executable="diagnose",
            name="dms_net_diagnosis",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=remappings,
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    default_params = [FindPackageShare("dms_net_ros"), "/config/diagnose.yaml"]
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its relative topics"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="YAML parameter file"),
        DeclareLaunchArgument("left_topic", default_value="", description="remap left/image_raw (and .../compressed) to this topic"),
        DeclareLaunchArgument("right_topic", default_value="", description="remap right/image_raw (and .../compressed) to this topic"),
        DeclareLaunchArgument("result_topic", default_value="", description="remap the diagnosis output topic"),
    ]
    args += [DeclareLaunchArgument(name, default_value="", description=desc + " (empty: params file)") for name, desc in PARAMETER_ARGUMENTS.items()]
    return LaunchDescription(args + [OpaqueFunction(function=_node)])
