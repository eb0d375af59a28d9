"""Did the swift study predict the retraining? Its scores next to the measured accuracy gains.

A swift study's ``scores.csv`` gives each metric (a probe set → eval set RelInf mean, in-task or
cross-task) at each checkpoint; a strategy's swift score is its metric's mean over checkpoints.
Each retrained run (other than the baseline) is matched with one metric: the one ``swift.metrics``
names for it, or else the metric whose probe set is named in the run's name (``base+cot`` → probe
set ``cot``) in the run's context: in-task for a run that continues from another run or
checkpoint (the paper's Table 1), cross-task for one trained from the pretrained model (Table 2).
Runs that match no single metric are listed with the reason.

The agreement is measured twice over the matched runs: against the accuracy gain, and against the
fall of the reference responses' NLL (−Δnll), the quantity RelInf predicts. Each time it is
Spearman's rank correlation with its Fisher-z interval (Bonett & Wright 2000; none for n ≤ 3), and
the number of runs whose change has the sign of their score (a positive score predicts a gain, or
a fall in NLL; a change of exactly 0 agrees with no sign) with its Wilson interval. In a
loss-only validation the accuracy side is empty (``None``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from swiftstudy.config.reader import spec_key_error
from swiftstudy.constants import CONTEXT_CROSS_TASK, CONTEXT_IN_TASK
from swiftstudy.errors import InputError
from swiftstudy.report.results import (
    SCORES_COLUMNS,
    MissingColumnsError,
    read_csv,
    select_columns,
)
from swiftstudy.scores import compute_rank_correlation
from swiftstudy.validate.results import AccuracyRow
from swiftstudy.validate.spec import RunSpec, ValidateSpec
from swiftstudy.validate.stats import compute_spearman_interval, compute_wilson_interval

logger = logging.getLogger(__name__)

#: What the agreement reads of a study's ``scores.csv``.
_REQUIRED_COLUMNS = select_columns(
    SCORES_COLUMNS, "metric", "context", "probes", "evals", "step", "value"
)
_NAME_TOKEN = re.compile(r"[^0-9a-z_]+")


@dataclass(frozen=True)
class SwiftScore:
    """A metric of the swift study, averaged over its checkpoints.

    Attributes:
        metric: The metric's name.
        probes: Its probe set.
        evals: Its eval set.
        context: ``in-task`` or ``cross-task``.
        value: The mean of its values over checkpoints (``None``: no checkpoint had a value).
        n_steps: Checkpoints with a value.
    """

    metric: str
    probes: str
    evals: str
    context: str
    value: float | None
    n_steps: int


@dataclass(frozen=True)
class StrategyMatch:
    """A run and the metric that predicts it, or why there is none."""

    run: str
    metric: str | None
    reason: str | None = None


@dataclass(frozen=True)
class StrategyAgreement:
    """A matched run: its swift score next to its accuracy gain and NLL change over the baseline.

    The accuracy fields are ``None`` in a loss-only validation, the NLL fields when the rows
    carry no NLL.
    """

    run: str
    metric: str
    probes: str
    evals: str
    context: str
    swift_score: float
    n_steps: int
    accuracy: float | None
    baseline_accuracy: float | None
    gain: float | None
    p_value: float | None
    sign_agrees: bool | None
    delta_nll: float | None = None
    delta_nll_low: float | None = None
    delta_nll_high: float | None = None
    sign_agrees_nll: bool | None = None


Interval = tuple[float, float]


@dataclass(frozen=True)
class Agreement:
    """The content of ``agreement.json``.

    ``spearman`` and ``sign_agreements`` compare the swift score with the accuracy gain (``None``
    in a loss-only validation); ``spearman_nll`` and ``sign_agreements_nll`` with −Δnll (``None``
    without NLLs). Each ``*_interval`` is the 95% interval of the value it extends: Fisher-z for
    Spearman's ρ, Wilson for the share of agreeing signs (``sign_agreements / n``).
    """

    scores: Path
    baseline: str
    strategies: tuple[StrategyAgreement, ...]
    unmatched: tuple[StrategyMatch, ...]
    spearman: float | None
    sign_agreements: int | None
    spearman_interval: Interval | None = None
    sign_agreements_interval: Interval | None = None
    spearman_nll: float | None = None
    spearman_nll_interval: Interval | None = None
    sign_agreements_nll: int | None = None
    sign_agreements_nll_interval: Interval | None = None

    def to_dict(self) -> dict[str, Any]:
        """The statistics in field order, intervals as lists, between the inputs and the runs."""
        statistics = {
            f.name: list(value) if isinstance(value := getattr(self, f.name), tuple) else value
            for f in fields(self)
            if f.name not in ("scores", "baseline", "strategies", "unmatched")
        }
        return {
            "scores": str(self.scores),
            "baseline": self.baseline,
            "n": len(self.strategies),
            **statistics,
            "strategies": [vars(s) for s in self.strategies],
            "unmatched": [{"run": m.run, "reason": m.reason} for m in self.unmatched],
        }


def load_swift_scores(path: Path) -> dict[str, SwiftScore]:
    """Read a study's ``scores.csv`` and average each metric over its checkpoints.

    Raises:
        InputError: The file is missing, lacks a column, or holds a value that is not a number.
    """
    try:
        rows = list(read_csv(path, _REQUIRED_COLUMNS))
        if not rows:  # a header alone is not a study's scores either
            raise MissingColumnsError(_REQUIRED_COLUMNS, path)
    except MissingColumnsError as err:
        raise InputError(
            f"not a study's scores.csv: no {', '.join(err.missing)} column", path=path, key="swift"
        ) from None
    except OSError as err:
        raise InputError(f"cannot read scores: {err.strerror}", path=path, key="swift") from err
    values: dict[str, list[float]] = {}
    first: dict[str, dict[str, str]] = {}
    for line, row in rows:
        first.setdefault(row["metric"], row)
        values.setdefault(row["metric"], [])
        if row["value"]:
            try:
                values[row["metric"]].append(float(row["value"]))
            except ValueError:
                raise InputError(
                    f"not a number: {row['value']!r}", path=path, line=line, key="value"
                ) from None
    return {
        metric: SwiftScore(
            metric=metric,
            probes=row["probes"],
            evals=row["evals"],
            context=row["context"],
            value=sum(values[metric]) / len(values[metric]) if values[metric] else None,
            n_steps=len(values[metric]),
        )
        for metric, row in first.items()
    }


def match_strategies(spec: ValidateSpec, scores: dict[str, SwiftScore]) -> list[StrategyMatch]:
    """Pair each run other than the baseline with the metric that predicts its gain.

    Raises:
        InputError: ``swift.metrics`` names a metric the scores do not hold.
    """
    assert spec.swift is not None
    chosen = dict(spec.swift.metrics)
    matches = []
    for run in spec.runs:
        if run.name == spec.baseline:
            continue
        if run.name in chosen:
            metric = chosen[run.name]
            if metric not in scores:
                raise spec_key_error(
                    spec.spec_path,
                    f"unknown metric {metric!r} (metrics in {spec.swift.scores.name}: "
                    f"{', '.join(scores)})",
                    ("swift", "metrics", run.name),
                )
            matches.append(StrategyMatch(run.name, metric))
        else:
            matches.append(_match_by_name(run, scores))
    return matches


def _match_by_name(run: RunSpec, scores: dict[str, SwiftScore]) -> StrategyMatch:
    tokens = set(_NAME_TOKEN.split(run.name.casefold()))
    probes = sorted({s.probes for s in scores.values() if s.probes.casefold() in tokens})
    if not probes:
        return StrategyMatch(run.name, None, "its name names no probe set of the swift study")
    if len(probes) > 1:
        return StrategyMatch(
            run.name,
            None,
            f"its name names several probe sets ({', '.join(probes)}): choose in swift.metrics",
        )
    continues = run.init_run is not None or (run.train is not None and run.train.init_from)
    context = CONTEXT_IN_TASK if continues else CONTEXT_CROSS_TASK
    candidates = [
        s.metric
        for s in scores.values()
        if s.probes == probes[0] and s.context == context and s.value is not None
    ]
    if len(candidates) == 1:
        return StrategyMatch(run.name, candidates[0])
    if not candidates:
        reason = f"no {context} metric with probe set {probes[0]!r} has a value"
    else:
        reason = f"several {context} metrics of {probes[0]!r} ({', '.join(candidates)})"
        reason += ": choose in swift.metrics"
    return StrategyMatch(run.name, None, reason)


def compute_agreement(
    matches: Sequence[StrategyMatch],
    scores: dict[str, SwiftScore],
    accuracy: Sequence[AccuracyRow],
    baseline: str,
    scores_path: Path,
) -> Agreement:
    """Swift scores against accuracy gains and NLL falls: the matched runs, ρ, sign agreements."""
    rows = {row.run: row for row in accuracy}
    strategies, unmatched = [], []
    for match in matches:
        score = None if match.metric is None else scores[match.metric]
        if score is None or score.value is None:
            reason = match.reason or f"metric {match.metric!r} has no value"
            unmatched.append(StrategyMatch(match.run, None, reason))
            logger.warning("agreement: run %r left out: %s", match.run, reason)
            continue
        row = rows[match.run]
        strategies.append(
            StrategyAgreement(
                run=match.run,
                metric=score.metric,
                probes=score.probes,
                evals=score.evals,
                context=score.context,
                swift_score=score.value,
                n_steps=score.n_steps,
                accuracy=row.accuracy,
                baseline_accuracy=rows[baseline].accuracy,
                gain=row.delta,
                p_value=row.p_value,
                sign_agrees=_same_sign(score.value, row.delta),
                delta_nll=row.delta_nll,
                delta_nll_low=row.delta_nll_low,
                delta_nll_high=row.delta_nll_high,
                sign_agrees_nll=_same_sign(
                    score.value, None if row.delta_nll is None else -row.delta_nll
                ),
            )
        )
    # Every row has accuracy (NLL) when the baseline's has: a validation grades all or none.
    gains = [s.gain for s in strategies if s.gain is not None]
    falls = [-s.delta_nll for s in strategies if s.delta_nll is not None]
    by_accuracy = _rank_and_signs(strategies, None if rows[baseline].delta is None else gains)
    by_nll = _rank_and_signs(strategies, None if rows[baseline].delta_nll is None else falls)
    return Agreement(
        scores=scores_path,
        baseline=baseline,
        strategies=tuple(strategies),
        unmatched=tuple(unmatched),
        spearman=by_accuracy[0],
        sign_agreements=by_accuracy[2],
        spearman_interval=by_accuracy[1],
        sign_agreements_interval=by_accuracy[3],
        spearman_nll=by_nll[0],
        spearman_nll_interval=by_nll[1],
        sign_agreements_nll=by_nll[2],
        sign_agreements_nll_interval=by_nll[3],
    )


def _same_sign(score: float, change: float | None) -> bool | None:
    """Whether the change has the score's sign (0 agrees with none); ``None`` without a change."""
    if change is None:
        return None
    return (score > 0 and change > 0) or (score < 0 and change < 0)


def _rank_and_signs(
    strategies: Sequence[StrategyAgreement], changes: Sequence[float] | None
) -> tuple[float | None, Interval | None, int | None, Interval | None]:
    """ρ(score, change), its interval, signs that agree, their interval; None without changes."""
    if changes is None:
        return None, None, None, None
    n = len(strategies)
    scores = [s.swift_score for s in strategies]
    rho = compute_rank_correlation(scores, changes)
    agree = sum(_same_sign(x, y) is True for x, y in zip(scores, changes, strict=True))
    return rho, compute_spearman_interval(rho, n), agree, compute_wilson_interval(agree, n)
