"""`dms-net-bag`: make rosbag2 exams from ODIR folders, evaluate them offline, replay them live.

QA's question is "does the node on the robot say what the model said on the workstation?".
The three subcommands answer it with the node's own code path:

- `make`     ODIR folder -> rosbag2 (mcap or sqlite3) of left/right eye images with a
             labels sidecar, stamped by a configurable acquisition model.
- `evaluate` bag + model bundle -> the node's pairing, decoding, preprocessing and engine,
             run offline -> ODIR report + per-pair CSV.
- `replay`   bag -> a running node over rclpy -> recorded DiagnosisResults -> the same
             report, plus a pair-by-pair comparison with `evaluate`.

Only `replay` imports rclpy (lazily), so `make` and `evaluate` run on a workstation
without ROS: bags are read and written with the pure-Python `rosbags` library.
"""
