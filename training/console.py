"""Console-script entry points of the training tools (``dms-net-train``, ``dms-net-eval``).

Their ``main`` functions return results (a dict) for Python callers such as ``run_suite`` and
the tests. A console script hands its function's return value to ``sys.exit``, which dumps a
dict to stderr and exits 1 after a successful run, so the scripts enter here instead: run
``main`` and exit 0 (errors still leave through ``SystemExit(2)`` with their one-line message).
"""

from __future__ import annotations


def train() -> int:
    from training.train import main

    main()
    return 0


def evaluate() -> int:
    from training.evaluate import main

    main()
    return 0
