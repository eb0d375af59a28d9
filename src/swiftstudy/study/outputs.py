"""The files a study writes, each written atomically (temp file, then rename).

Other tools read these files: the names and columns are part of the interface.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SCORES_COLUMNS = ("metric", "context", "probes", "evals", "step", "checkpoint", "value", "n_pairs")
RELINF_COLUMNS = (
    "step",
    "checkpoint",
    "probe_set",
    "probe_id",
    "probe_task",
    "eval_set",
    "eval_id",
    "eval_task",
    "dot",
    "eval_sqnorm",
    "relinf",
)


@dataclass(frozen=True)
class ScoreRow:
    """One line of ``scores.csv``: a metric at a checkpoint (``value`` None: no pairs)."""

    metric: str
    context: str
    probes: str
    evals: str
    step: int
    checkpoint: str
    value: float | None
    n_pairs: int


@dataclass(frozen=True)
class RelInfRow:
    """One line of ``relinf.csv``: a (probe, eval) pair at a checkpoint."""

    step: int
    checkpoint: str
    probe_set: str
    probe_id: str
    probe_task: str
    eval_set: str
    eval_id: str
    eval_task: str
    dot: float
    eval_sqnorm: float
    relinf: float


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_csv(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """CSV text with a header; floats written with full precision (``repr``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


def render_scores_csv(rows: Sequence[ScoreRow]) -> str:
    """The text of ``scores.csv``."""
    return render_csv(SCORES_COLUMNS, ([getattr(r, c) for c in SCORES_COLUMNS] for r in rows))


def render_relinf_csv(rows: Sequence[RelInfRow]) -> str:
    """The text of ``relinf.csv``."""
    return render_csv(RELINF_COLUMNS, ([getattr(r, c) for c in RELINF_COLUMNS] for r in rows))


def render_tokens_jsonl(records: Iterable[dict]) -> str:
    """The text of ``tokens.jsonl``: one compact JSON object a line."""
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
