"""Dataset: a JSONL file on disk, read in a stream, never modified."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftkit.data.reader import iter_objects, require_file
from ftkit.data.scan import DatasetStats, ValidationReport, build_stats, scan
from ftkit.data.targets import Target, make_target
from ftkit.errors import DatasetError

if TYPE_CHECKING:
    import pandas as pd


class Dataset:
    """A JSONL data file. Loading only checks that it exists; every read streams it.

    Example:
        >>> ds = Dataset.load("train.jsonl")
        >>> report = ds.validate(target="openai:gpt-4.1-mini-2025-04-14")
        >>> report.ok, report.errors[:3]
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """Open a JSONL file.

        Raises:
            DatasetError: the file does not exist or is a folder.
        """
        return cls(require_file(path, DatasetError))

    @classmethod
    def from_pandas(
        cls,
        frame: pd.DataFrame,
        path: str | Path,
        *,
        text_col: str = "text",
        label_col: str = "label",
        labels: Sequence[str] | None = None,
        force: bool = False,
    ) -> Dataset:
        """Write a DataFrame's text and label columns as a classification JSONL file, and open it.

        A Dataset is a file on disk (jobs record its sha256 and read it in a stream), so the frame is
        written first, atomically. Every row is checked before: a missing or empty text or label,
        or a label outside ``labels``, is an error naming the row's index.

        Example:
            >>> ds = Dataset.from_pandas(df, "train.jsonl", text_col="review", label_col="sentiment")

        Raises:
            DatasetError: a column is missing or rows are bad (all listed, up to 10).
            ConfigError: ``path`` exists (without ``force``).
        """
        from ftkit.data.tables import frame_rows

        rows = frame_rows(frame, text_col=text_col, label_col=label_col, labels=labels)
        return cls._write(rows, path, force=force, inputs=())

    @classmethod
    def from_csv(
        cls,
        csv_path: str | Path,
        path: str | Path,
        *,
        text_col: str = "text",
        label_col: str = "label",
        labels: Sequence[str] | None = None,
        force: bool = False,
    ) -> Dataset:
        """Write a CSV/TSV file's text and label columns as a classification JSONL file, and open it.

        Raises:
            DatasetError: the CSV lacks a column or has bad rows (each named ``file:line``).
            ConfigError: ``path`` exists (without ``force``) or is ``csv_path``.
        """
        from ftkit.data.tables import csv_rows

        rows = csv_rows(csv_path, text_col=text_col, label_col=label_col, labels=labels)
        return cls._write(rows, path, force=force, inputs=(csv_path,))

    @classmethod
    def _write(
        cls, rows: list[dict[str, str]], path: str | Path, *, force: bool, inputs: Sequence[str | Path]
    ) -> Dataset:
        import orjson

        from ftkit.atomic import atomic_write_bytes
        from ftkit.outputs import check_outputs

        (target,) = check_outputs([path], inputs=inputs, force=force)
        atomic_write_bytes(target, b"".join(orjson.dumps(r) + b"\n" for r in rows))
        return cls.load(target)

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r})"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The parsed examples, in order; blank lines are skipped.

        Raises:
            DatasetError: at the first line that is not a JSON object (``validate`` lists them all):
                no line of the file is dropped without a word.
        """
        for line in iter_objects(self.path):
            yield line.obj

    def validate(
        self,
        target: str | Target | None = None,
        *,
        labels: list[str] | None = None,
        task: str | None = None,
        preamble: str | None = None,
    ) -> ValidationReport:
        """Check every line; never stops at the first problem.

        Args:
            target: ``openai:<model>`` or ``hf:<path>`` to add that model's rules and token limits.
            labels: the allowed labels of a classification file.
            task: the job's task; a file of another format is an error.
            preamble: the classification prompt, for exact token counts of converted examples.
        """
        t = make_target(target, labels, preamble)
        # Token counts matter only where a limit can be broken; plain validation skips them.
        return scan(self.path, t, labels=labels, task=task, count_tokens=target is not None).report

    def stats(
        self,
        target: str | Target | None = None,
        *,
        test: str | Path | None = None,
        labels: list[str] | None = None,
        preamble: str | None = None,
    ) -> DatasetStats:
        """Counts, token distribution, billed tokens per epoch, labels, duplicates, train/test overlap.

        Tokens are counted with the target's tokenizer (o200k_base when no target is given).
        """
        t = make_target(target, labels, preamble)
        train = scan(self.path, t, labels=labels)
        other = scan(Dataset.load(test).path, t, labels=labels, count_tokens=False) if test else None
        return build_stats(train, other)

    def labels(self) -> list[str]:
        """The sorted distinct labels of a classification file."""
        from ftkit.data.formats import label_str

        return sorted({label_str(o["label"]) for o in self if "label" in o})
