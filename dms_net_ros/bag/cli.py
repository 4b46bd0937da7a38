"""`dms-net-bag {make,evaluate,replay}`: the console script (see `dms_net_ros.bag`).

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args)``;
the modules are imported only when their subcommand runs, so ``make`` and ``evaluate``
never import rclpy (nor torch unless the torch backend is chosen). User-facing failures
(`BagError` and friends) print one ``dms-net-bag: error: ...`` line and exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "make": ("dms_net_ros.bag.make", "ODIR folder -> rosbag2 of left/right eye images + labels sidecar"),
    "evaluate": ("dms_net_ros.bag.evaluate",
                 "bag + model bundle -> the node's pipeline offline -> ODIR report + per-pair CSV"),
    "replay": ("dms_net_ros.bag.replay",
               "bag -> a running node over rclpy -> recorded results, report and live-vs-offline comparison"),
}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dms-net-bag",
        description="Make, evaluate and replay rosbag2 fundus exams for the DMS-Net diagnosis node.",
        add_help=add_help,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{make,evaluate,replay}")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module_name).add_arguments(p)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    from dms_net_ros.bag.io import BagError

    args = get_args_parser().parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except BagError as err:
        print(f"dms-net-bag: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dms-net-bag: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
