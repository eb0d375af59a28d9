"""The text files a validation study writes: accuracy.csv, predictions.jsonl, table.md, agreement.

Other tools read these files: the names and columns are part of the interface.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from swiftstudy.constants import MAX_TABLE_TASKS, SIGNIFICANCE_LEVEL
from swiftstudy.report.results import render_csv
from swiftstudy.validate.agreement import Agreement
from swiftstudy.validate.results import ACCURACY_COLUMNS, AccuracyRow, PredictionRow

_DASH = "–"


def render_accuracy_csv(rows: Sequence[AccuracyRow]) -> str:
    """The text of ``accuracy.csv``; floats with full precision, an empty cell for no value."""
    return render_csv(ACCURACY_COLUMNS, ([getattr(r, c) for c in ACCURACY_COLUMNS] for r in rows))


def render_predictions_jsonl(rows: Sequence[PredictionRow]) -> str:
    """The text of ``predictions.jsonl``: one JSON object a line."""
    return "".join(json.dumps(asdict(row), ensure_ascii=False) + "\n" for row in rows)


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
    """``table.md``: accuracy and reference NLL by run, and the agreement with the study.

    Accuracy columns are left out of a loss-only validation, NLL columns of rows without NLL.
    Per-task columns are added when the eval set has between 2 and ``MAX_TABLE_TASKS`` tasks.
    """
    tasks = list(next(iter(task_accuracy.values()), {}))
    show_tasks = 2 <= len(tasks) <= MAX_TABLE_TASKS
    graded = any(row.accuracy is not None for row in rows)
    scored = any(row.nll is not None for row in rows)
    n = rows[0].n if rows else 0
    title = "accuracy and reference NLL" if graded and scored else "accuracy" if graded else "NLL"
    lines = [
        f"# Validation: {title} by run",
        "",
        *_legend(n, eval_name, evaluator, baseline, graded),
    ]
    header = ["Run"]
    if graded:
        header += ["Accuracy", "95% CI", "Δ", "p"]
    if scored:
        header += ["NLL", "NLL/token", "ΔNLL", "ΔNLL 95% CI"]
    if graded and show_tasks:
        header += [_cell(task) for task in tasks]
    lines.append(_row(header))
    lines.append(_row([":--"] + ["--:"] * (len(header) - 1)))
    for row in rows:
        cells = [_cell(row.run)]
        if graded:
            cells += _accuracy_cells(row, baseline)
        if scored:
            cells += _nll_cells(row, baseline)
        if graded and show_tasks:
            cells += [f"{100 * task_accuracy[row.run][task]:.1f}" for task in tasks]
        lines.append(_row(cells))
    if agreement is not None:
        lines += ["", *_agreement_lines(agreement)]
    return "\n".join(lines) + "\n"


def _legend(n: int, eval_name: str, evaluator: str, baseline: str, graded: bool) -> list[str]:
    grading = f"evaluator `{evaluator}`" if graded else "loss only, no answers graded"
    text = f"Eval set `{eval_name}` (n = {n}, {grading}), baseline `{baseline}`. "
    if graded:
        text += (
            "Accuracy in %, with its 95% Wilson interval; Δ: points above the baseline; p: exact "
            f"McNemar test on the same queries; **bold**: p < {SIGNIFICANCE_LEVEL:g}. "
        )
    text += (
        "NLL: the reference responses' summed completion NLL (nats, the study's loss) averaged "
        "over queries; NLL/token: total NLL over total completion tokens; ΔNLL: mean paired "
        "difference to the baseline with its 95% interval (negative: the references became "
        "more likely, what a positive RelInf predicts)."
    )
    return [text, ""]


def _accuracy_cells(row: AccuracyRow, baseline: str) -> list[str]:
    if row.accuracy is None or row.ci_low is None or row.ci_high is None or row.delta is None:
        return [_DASH] * 4
    if row.run == baseline:
        delta, p_value = _DASH, _DASH
    else:
        delta = f"{100 * row.delta:+.1f}"
        p_value = _format_p(row.p_value)
        if row.p_value is not None and row.p_value < SIGNIFICANCE_LEVEL:
            delta = f"**{delta}**"
    span = f"{100 * row.ci_low:.1f}–{100 * row.ci_high:.1f}"
    return [f"{100 * row.accuracy:.1f}", span, delta, p_value]


def _nll_cells(row: AccuracyRow, baseline: str) -> list[str]:
    if row.nll is None:
        return [_DASH] * 4
    per_token = _DASH if row.nll_per_token is None else f"{row.nll_per_token:.4f}"
    delta = span = _DASH
    if row.run != baseline and row.delta_nll is not None:
        delta = f"{row.delta_nll:+.3f}"
    if row.delta_nll_low is not None and row.delta_nll_high is not None:
        span = f"{row.delta_nll_low:+.3f} to {row.delta_nll_high:+.3f}"
        if row.delta_nll_low > 0 or row.delta_nll_high < 0:
            delta = f"**{delta}**"
    return [f"{row.nll:.3f}", per_token, delta, span]


def _agreement_lines(agreement: Agreement) -> list[str]:
    lines = [
        "## Swift study against retraining",
        "",
        f"Swift score: the metric's mean RelInf over the checkpoints of `{agreement.scores}`; "
        f"gain: accuracy points above `{agreement.baseline}`; ΔNLL: the change of the reference "
        "responses' NLL (a positive score predicts a negative ΔNLL).",
        "",
    ]
    if agreement.strategies:
        header = ["Run", "Swift metric", "Swift score", "Gain", "p", "Sign agrees"]
        header += ["ΔNLL", "Sign agrees (NLL)"]
        lines.append(_row(header))
        lines.append(_row([":--", ":--", "--:", "--:", "--:", ":-:", "--:", ":-:"]))
        for s in agreement.strategies:
            gain = _DASH if s.gain is None else f"{100 * s.gain:+.1f}"
            delta_nll = _DASH if s.delta_nll is None else f"{s.delta_nll:+.3f}"
            cells = [_cell(s.run), _cell(s.metric), f"{s.swift_score:+.4f}", gain]
            cells += [_format_p(s.p_value), _yes_no(s.sign_agrees), delta_nll]
            cells.append(_yes_no(s.sign_agrees_nll))
            lines.append(_row(cells))
        lines.append("")
    for against, measure in (("the accuracy gain", ""), ("−ΔNLL", "_nll")):
        if getattr(agreement, f"sign_agreements{measure}") is not None:
            lines.append(_agreement_sentence(against, agreement, measure))
    if agreement.unmatched:
        lines.append("")
    for match in agreement.unmatched:
        lines.append(f"- `{match.run}` left out: {match.reason}.")
    return lines


def _agreement_sentence(against: str, agreement: Agreement, measure: str) -> str:
    """The sentence on ``spearman<measure>``, ``sign_agreements<measure>`` and their intervals."""
    value, interval, agree, share = (
        getattr(agreement, f"{name}{measure}{end}")
        for name in ("spearman", "sign_agreements")
        for end in ("", "_interval")
    )
    n = len(agreement.strategies)
    if value is None:
        rho_text = "n/a (needs 3 strategies with distinct values)"
    elif interval is None:
        rho_text = f"{value:+.2f} (no interval below 4 strategies)"
    else:
        rho_text = f"{value:+.2f} (95% CI {interval[0]:+.2f} to {interval[1]:+.2f})"
    signs_text = f"for {agree} of {n}"
    if share is not None:
        signs_text += f" (95% CI {100 * share[0]:.0f}–{100 * share[1]:.0f}%)"
    strategies = f"{n} strateg{'y' if n == 1 else 'ies'}"
    return (
        f"Against {against} over {strategies}: Spearman ρ = {rho_text}; signs agree {signs_text}."
    )


def _yes_no(value: bool | None) -> str:
    return _DASH if value is None else "yes" if value else "no"


def _format_p(p_value: float | None) -> str:
    if p_value is None:
        return _DASH
    return "<0.001" if p_value < 0.001 else f"{p_value:.3f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
