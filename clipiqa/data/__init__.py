"""Data: dataset readers, splits, image transforms, synthetic distortions and the embedded demo set."""
from .demo import build_demo_set, demo_references
from .distortions import DISTORTIONS, apply_distortion, list_distortions
from .readers import DATASETS, DatasetFormatError, LabelScaleError, read_dataset, read_labels
from .splits import (Split, few_shot, has_content_groups, holdout, split_dataset, split_hash,
                     standard_splits)

__all__ = [
    "read_dataset", "read_labels", "DATASETS", "DatasetFormatError", "LabelScaleError",
    "split_dataset", "few_shot", "standard_splits", "split_hash", "holdout", "Split", "has_content_groups",
    "DISTORTIONS", "apply_distortion", "list_distortions", "build_demo_set", "demo_references",
]
