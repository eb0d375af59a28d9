"""Reference examples with their whole records, so templates can use fields such as ``label``.

:func:`swiftstudy.data.load_examples` checks the file and keeps only what a study needs; a
strategy may also read other fields (``label`` for the evaluation strategy, or any field of a
custom one), so the raw records are read again beside the examples, line for line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftstudy.data.examples import Example, load_examples
from swiftstudy.errors import InputError


@dataclass(frozen=True)
class Reference:
    """A reference example and the record it was read from.

    Attributes:
        example: The parsed example (prompt turns, response, id, task, origin).
        record: Every field of its JSON line or dataset row (``null`` fields dropped).
    """

    example: Example
    record: dict[str, Any]


def load_references(path: str | Path, *, split: str | None = None) -> list[Reference]:
    """Load reference examples and their records from a JSONL file or a saved dataset.

    Args:
        path: Any file :func:`swiftstudy.data.load_examples` reads.
        split: The split of a saved ``DatasetDict``.

    Returns:
        The references, in file order.

    Raises:
        InputError: The file is not valid example data (see ``load_examples``).
    """
    examples = load_examples(path, split=split)
    path = Path(path)
    records = _dataset_records(path, split) if path.is_dir() else _jsonl_records(path)
    if len(records) != len(examples):
        raise InputError("changed while it was being read", path=path)
    return [
        Reference(example, {k: v for k, v in record.items() if v is not None})
        for example, record in zip(examples, records, strict=True)
    ]


def _jsonl_records(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _dataset_records(path: Path, split: str | None) -> list[dict[str, Any]]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if split is not None:
        loaded = loaded[split]
    return [dict(row) for row in loaded]
