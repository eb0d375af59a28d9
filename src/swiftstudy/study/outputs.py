"""The files a study writes, each written atomically (temp file, then rename).

Other tools read these files: the names and columns are part of the interface.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SCORES_COLUMNS = (
    "metric",
    "context",
    "probes",
    "evals",
    "step",
    "checkpoint",
    "value",
    "n_pairs",
    "ci_low",
    "ci_high",
)
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
NORMS_COLUMNS = ("step", "checkpoint", "set", "id", "task", "n_completion_tokens", "sqnorm")


@dataclass(frozen=True)
class ScoreRow:
    """One line of ``scores.csv``: a metric at a checkpoint (``value`` None: no pairs).

    ``ci_low`` and ``ci_high`` bound its 95% two-way bootstrap interval (None: no interval; see
    ``swiftstudy.scores.statistics``).
    """

    metric: str
    context: str
    probes: str
    evals: str
    step: int
    checkpoint: str
    value: float | None
    n_pairs: int
    ci_low: float | None = None
    ci_high: float | None = None


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


@dataclass(frozen=True)
class NormRow:
    """One line of ``norms.csv``: an example's squared gradient norm at a checkpoint."""

    step: int
    checkpoint: str
    set: str
    id: str
    task: str
    n_completion_tokens: int
    sqnorm: float


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


def render_norms_csv(rows: Sequence[NormRow]) -> str:
    """The text of ``norms.csv``."""
    return render_csv(NORMS_COLUMNS, ([getattr(r, c) for c in NORMS_COLUMNS] for r in rows))


def render_tokens_jsonl(records: Iterable[dict]) -> str:
    """The text of ``tokens.jsonl``: one compact JSON object a line."""
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
