"""DMS-Net core: model, data pipeline, metrics, model bundle and inference runtimes.

This package never imports ROS: the same code serves the training workstation, the
offline evaluator, the bag tools and the ROS node, so that what was validated offline is
exactly what runs on the robot.
"""

__version__ = "0.1.0"
