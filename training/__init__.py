"""Training, evaluation and multi-run entry points (torch; never imported by the node)."""
