"""The clinician display: a ROS 2 node serving one web page of a diagnosis node's results.

`node` (rclpy: subscriptions, matching images to results) -> `exam_store` (bounded, in
memory) -> `server` (aiohttp in its own thread, `security` rules) -> ``static/`` (the page).
"""
