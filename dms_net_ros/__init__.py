"""DMS-Net ROS 2 node: pairing, image conversion, result messages and the lifecycle node.

The generated message module (`dms_net_ros.msg`) is installed by colcon into the same
package name; `extend_path` lets a checkout on sys.path (running from the repository root)
still find that installed `msg/` subpackage. This package never defines model math: it
calls `dms_net_core`.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
