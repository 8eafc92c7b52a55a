"""Samples, datasets, the loaders of the real formats, splits and k-shot sampling."""

from kdsl.data.clinc150 import OOS_LABEL, load_clinc150
from kdsl.data.csv_format import load_banking77, load_csv
from kdsl.data.jsonl import load_jsonl, save_jsonl
from kdsl.data.loading import FORMATS, detect_format, load_dataset
from kdsl.data.mdsirc import DIALOGUE_TASK, IMAGE_TASK, load_mdsirc
from kdsl.data.sample import Dataset, InvalidItem, Sample, Turn
from kdsl.data.splits import (
    PARTS,
    Split,
    SplitConfig,
    k_shot,
    split_dataset,
    stratified_folds,
    with_test_file,
)
from kdsl.data.summary import DatasetSummary, TaskSummary, summarize

__all__ = [
    "DIALOGUE_TASK", "FORMATS", "IMAGE_TASK", "OOS_LABEL", "PARTS",
    "Dataset", "InvalidItem", "Sample", "Split", "SplitConfig", "Turn",
    "detect_format", "k_shot", "load_banking77", "load_clinc150", "load_csv", "load_dataset",
    "load_jsonl", "load_mdsirc", "save_jsonl", "split_dataset", "stratified_folds", "with_test_file",
    "DatasetSummary", "TaskSummary", "summarize",
]
