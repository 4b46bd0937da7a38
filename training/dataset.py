"""A torch Dataset of eye pairs (for users who want a DataLoader, e.g. huge datasets that
do not fit the in-memory cache); returns exactly `preprocess_eye`'s tensors."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from dms_net_core.data.odir import PatientRecord
from dms_net_core.data.preprocess import PreprocessConfig, load_rgb, preprocess_eye


class OdirPairDataset(Dataset):
    """``(left [3,S,S], right [3,S,S], labels [8] float32)`` per patient, eval transform."""

    def __init__(self, records: list[PatientRecord], cfg: PreprocessConfig) -> None:
        missing = [r.patient_id for r in records if not r.has_both]
        if missing:
            raise ValueError(f"{len(missing)} patients lack an eye (e.g. {missing[:3]}): "
                             "load them with skip_missing_eye=True")
        self.records, self.cfg = records, cfg

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r = self.records[i]
        left = preprocess_eye(load_rgb(r.left_path), self.cfg)
        right = preprocess_eye(load_rgb(r.right_path), self.cfg)
        return torch.from_numpy(left), torch.from_numpy(right), torch.from_numpy(r.labels.astype(np.float32))
