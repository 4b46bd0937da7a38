# Source me: puts the venv and the colcon install on the path and keeps DDS on this machine.
# ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: without it Fast DDS multicasts off the machine
# (Kilted ignores ROS_LOCALHOST_ONLY). ROS_DOMAIN_ID: one per run unless the caller set one.
_DMS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH=$_DMS_ROOT/.venv/bin:$PATH
export AMENT_PREFIX_PATH=$_DMS_ROOT/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
if [ -f "$_DMS_ROOT/install/setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$_DMS_ROOT/install/setup.bash"
fi
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$_DMS_ROOT/config/fastdds_large_images.xml}
# Let rmw_fastrtps apply the profile's memory policy (payloads freed after use) instead of its own.
export RMW_FASTRTPS_USE_QOS_FROM_XML=${RMW_FASTRTPS_USE_QOS_FROM_XML:-1}
export PYTHONPATH=$_DMS_ROOT${PYTHONPATH:+:$PYTHONPATH}
