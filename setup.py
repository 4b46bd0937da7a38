"""pip installation for workstations without ROS (training, evaluation, export, bag tools).

On a robot, colcon builds this same repository as the ament_cmake package `dms_net_ros`
(CMakeLists.txt, package.xml) and never reads this file.
"""

from setuptools import find_packages, setup

setup(
    name="dms_net_ros",
    version="0.1.0",
    description="DMS-Net binocular fundus diagnosis: PyTorch model, training, runtimes and ROS 2 node",
    packages=find_packages(include=["dms_net_core*", "dms_net_ros*", "training*", "benchmarks*"]),
    package_data={"training": ["configs/*.yaml", "splits/*.json"], "dms_net_ros.display": ["static/*"]},
    python_requires=">=3.10",
    install_requires=[line.strip() for line in open("requirements/runtime.txt")
                      if line.strip() and not line.startswith("#")],
    extras_require={
        "train": [line.strip() for line in open("requirements/train.txt") if line.strip() and not line.startswith("#")],
        "test": [line.strip() for line in open("requirements/test.txt") if line.strip() and not line.startswith("#")],
    },
    entry_points={
        "console_scripts": [
            "dms-net-train=training.console:train",
            "dms-net-eval=training.console:evaluate",
            "dms-net-export=dms_net_core.export:main",
            "dms-net-ensemble=training.ensemble:main",
            "dms-net-oof=training.oof:main",
            "dms-net-head-bakeoff=training.head_bakeoff:main",
            "dms-net-build-engine=dms_net_core.runtime.build_engine:main",
            "dms-net-bench=benchmarks.bench_backends:main",
            "dms-net-bag=dms_net_ros.bag.cli:main",
            "dms-net-display=dms_net_ros.display.node:main",
        ]
    },
)
