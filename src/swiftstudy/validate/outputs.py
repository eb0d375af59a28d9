"""The text files a validation study writes: accuracy.csv, predictions.jsonl, table.md, agreement.

Other tools read these files: the names and columns are part of the interface.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence

from swiftstudy.constants import MAX_TABLE_TASKS, SIGNIFICANCE_LEVEL
from swiftstudy.validate.agreement import Agreement
from swiftstudy.validate.results import ACCURACY_COLUMNS, AccuracyRow, PredictionRow

_DASH = "–"


def render_accuracy_csv(rows: Sequence[AccuracyRow]) -> str:
    """The text of ``accuracy.csv``; floats with full precision, an empty cell for no value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ACCURACY_COLUMNS)
    for row in rows:
        values = [getattr(row, column) for column in ACCURACY_COLUMNS]
        writer.writerow(
            ["" if v is None else repr(v) if isinstance(v, float) else v for v in values]
        )
    return buffer.getvalue()


def render_predictions_jsonl(rows: Sequence[PredictionRow]) -> str:
    """The text of ``predictions.jsonl``: one JSON object a line."""
    return "".join(json.dumps(row.to_dict(), ensure_ascii=False) + "\n" for row in rows)


def render_agreement_json(agreement: Agreement) -> str:
    """The text of ``agreement.json``."""
    return json.dumps(agreement.to_dict(), ensure_ascii=False, indent=2) + "\n"


def render_table_md(
    rows: Sequence[AccuracyRow],
    *,
    baseline: str,
    eval_name: str,
    evaluator: str,
    task_accuracy: Mapping[str, Mapping[str, float]],
    agreement: Agreement | None = None,
) -> str:
    """``table.md``: the paper-style table of accuracy by run, and the agreement with the study.

    Per-task columns are added when the eval set has between 2 and ``MAX_TABLE_TASKS`` tasks.
    """
    tasks = list(next(iter(task_accuracy.values()), {}))
    show_tasks = 2 <= len(tasks) <= MAX_TABLE_TASKS
    n = rows[0].n if rows else 0
    lines = [
        "# Validation: accuracy by run",
        "",
        f"Eval set `{eval_name}` (n = {n}, evaluator `{evaluator}`), baseline `{baseline}`. "
        "Accuracy in %, with its 95% Wilson interval; Δ: points above the baseline; p: exact "
        f"McNemar test on the same queries; **bold**: p < {SIGNIFICANCE_LEVEL:g}.",
        "",
    ]
    header = ["Run", "Accuracy", "95% CI", "Δ", "p"]
    if show_tasks:
        header += [_cell(task) for task in tasks]
    lines.append(_row(header))
    lines.append(_row([":--"] + ["--:"] * (len(header) - 1)))
    for row in rows:
        if row.run == baseline:
            delta, p_value = _DASH, _DASH
        else:
            delta = f"{100 * row.delta:+.1f}"
            p_value = _format_p(row.p_value)
            if row.p_value is not None and row.p_value < SIGNIFICANCE_LEVEL:
                delta = f"**{delta}**"
        cells = [
            _cell(row.run),
            f"{100 * row.accuracy:.1f}",
            f"{100 * row.ci_low:.1f}–{100 * row.ci_high:.1f}",
            delta,
            p_value,
        ]
        if show_tasks:
            cells += [f"{100 * task_accuracy[row.run][task]:.1f}" for task in tasks]
        lines.append(_row(cells))
    if agreement is not None:
        lines += ["", *_agreement_lines(agreement)]
    return "\n".join(lines) + "\n"


def _agreement_lines(agreement: Agreement) -> list[str]:
    lines = [
        "## Swift study against retraining",
        "",
        f"Swift score: the metric's mean RelInf over the checkpoints of `{agreement.scores}`; "
        f"gain: accuracy points above `{agreement.baseline}`.",
        "",
    ]
    if agreement.strategies:
        lines.append(_row(["Run", "Swift metric", "Swift score", "Gain", "p", "Sign agrees"]))
        lines.append(_row([":--", ":--", "--:", "--:", "--:", ":-:"]))
        for s in agreement.strategies:
            lines.append(
                _row(
                    [
                        _cell(s.run),
                        _cell(s.metric),
                        f"{s.swift_score:+.4f}",
                        f"{100 * s.gain:+.1f}",
                        _format_p(s.p_value),
                        "yes" if s.sign_agrees else "no",
                    ]
                )
            )
        lines.append("")
    n = len(agreement.strategies)
    rho = "n/a (needs 3 strategies with distinct values)"
    if agreement.spearman is not None:
        rho = f"{agreement.spearman:+.2f}"
    lines.append(
        f"Spearman ρ (swift score, gain) = {rho} over {n} strateg{'y' if n == 1 else 'ies'}; "
        f"signs agree for {agreement.sign_agreements} of {n}."
    )
    if agreement.unmatched:
        lines.append("")
    for match in agreement.unmatched:
        lines.append(f"- `{match.run}` left out: {match.reason}.")
    return lines


def _format_p(p_value: float | None) -> str:
    if p_value is None:
        return _DASH
    return "<0.001" if p_value < 0.001 else f"{p_value:.3f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
