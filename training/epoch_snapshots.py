"""Per-epoch snapshots of a training run (``dms-net-train --epoch-snapshots``).

Cross-validation must choose *one* epoch count for all folds from the pooled out-of-fold
predictions; each fold's own best epoch is picked on the very patients it is then scored on,
which flatters the out-of-fold score. So every epoch keeps its validation probabilities (small)
and its checkpoint (a loadable ``best.pt``-style file, ~20 MB for Lite0), and
`training.oof` reads them back: the epoch is chosen on the pooled predictions, and the members
shipped are the folds' checkpoints at that epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SNAPSHOT_DIR = "epochs"


def snapshot_paths(run_dir: Path, epoch: int) -> tuple[Path, Path]:
    """(validation probabilities .npy, checkpoint .pt) of one epoch of a run."""
    d = Path(run_dir) / SNAPSHOT_DIR
    return d / f"val_probs_{epoch:03d}.npy", d / f"epoch_{epoch:03d}.pt"


def save_epoch_snapshot(run_dir: Path, epoch: int, checkpoint: dict[str, Any], val_probs: np.ndarray) -> None:
    """Write one epoch's validation probabilities [N, C] and its checkpoint (written to a
    temporary name first so an interrupted save never leaves a truncated file behind)."""
    import torch

    probs_path, ckpt_path = snapshot_paths(run_dir, epoch)
    probs_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(probs_path, np.asarray(val_probs, dtype=np.float32))
    tmp = ckpt_path.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(ckpt_path)


def epoch_val_probs(run_dir: Path) -> dict[int, np.ndarray]:
    """{epoch: validation probabilities [N, C]} of every snapshot of a run (empty without any)."""
    out: dict[int, np.ndarray] = {}
    for path in sorted((Path(run_dir) / SNAPSHOT_DIR).glob("val_probs_*.npy")):
        out[int(path.stem.rsplit("_", 1)[1])] = np.load(path)
    return out
