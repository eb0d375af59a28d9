"""Reference examples with their whole records, so templates can use fields such as ``label``.

:func:`swiftstudy.data.load_examples` checks the file and keeps only what a study needs in the
example's fields; a strategy may also read other fields (``label`` for the evaluation strategy, or
any field of a custom one), which the example keeps in its ``record``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftstudy.data.examples import Example, load_examples


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
    return [Reference(e, dict(e.record)) for e in load_examples(path, split=split)]
