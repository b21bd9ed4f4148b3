"""JSONL data: reading, formats, validation, statistics, conversion and splits."""

from ftkit.data.convert import classification_messages, classification_to_chat, convert_file, render_preamble
from ftkit.data.dataset import Dataset
from ftkit.data.issues import CODES, Issue
from ftkit.data.scan import DatasetStats, TokenStats, ValidationReport
from ftkit.data.split import split_examples, split_file

__all__ = [
    "CODES",
    "Dataset",
    "DatasetStats",
    "Issue",
    "TokenStats",
    "ValidationReport",
    "classification_messages",
    "classification_to_chat",
    "convert_file",
    "render_preamble",
    "split_examples",
    "split_file",
]
