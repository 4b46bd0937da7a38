"""ODIR-5K data pipeline: preprocessing, quality measures, datasets, augmentation, splits."""
