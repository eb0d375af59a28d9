"""The study's tables from its Gram matrices: metric means with intervals, pair RelInf, norms.

RelInf(z, z0) = <g(z), g(z0)> / <g(z0), g(z0)> is read off each checkpoint's Gram matrix of the
unique examples (``scores.compute_relinf``); a metric is the mean over its in-task or cross-task
pairs (``scores.aggregate_metric``), with a bootstrap interval (``scores.statistics``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from swiftstudy.data import TokenizedExample
from swiftstudy.model import Checkpoint
from swiftstudy.report.results import NormRow, RelInfRow, ScoreRow
from swiftstudy.scores import (
    MetricPairs,
    PairMatrix,
    StudyStatistics,
    aggregate_metric,
    compute_pair_mask,
    compute_relinf,
    compute_study_statistics,
)
from swiftstudy.study.rows import RowMaps
from swiftstudy.study.spec import MetricSpec, StudySpec

logger = logging.getLogger(__name__)


def compute_tables(
    spec: StudySpec,
    checkpoints: Sequence[Checkpoint],
    grams: Sequence[torch.Tensor],
    tokenized: dict[str, list[TokenizedExample]],
    rows_of: RowMaps,
) -> tuple[list[ScoreRow], list[RelInfRow]]:
    """Metric means with their intervals, and the RelInf of every pair the metrics use."""
    values: list[tuple[MetricSpec, Checkpoint, float, int]] = []
    relinf_rows: list[RelInfRow] = []
    matrices: dict[str, list[PairMatrix]] = {m.name: [] for m in spec.metrics}
    for ckpt, gram in zip(checkpoints, grams, strict=True):
        for metric in spec.metrics:
            probes = [t.example for t in tokenized[metric.probes]]
            evals = [t.example for t in tokenized[metric.evals]]
            dots = gram[rows_of.probes[metric.probes]][:, rows_of.evals[metric.evals]]
            sqnorms = gram[rows_of.evals[metric.evals], rows_of.evals[metric.evals]]
            relinf, valid = compute_relinf(dots, sqnorms)
            pairs = compute_pair_mask(
                [e.task for e in probes], [e.task for e in evals], metric.context
            )
            value = aggregate_metric(relinf, valid, pairs)
            if value.n_excluded_evals:
                logger.warning(
                    "step %d, %s: %d eval example(s) have a zero gradient, "
                    "hence no RelInf: left out",
                    ckpt.step,
                    metric.name,
                    value.n_excluded_evals,
                )
            values.append((metric, ckpt, value.value, value.n_pairs))
            used = pairs & valid.unsqueeze(0)
            matrices[metric.name].append(PairMatrix(ckpt.step, relinf.numpy(), used.numpy()))
            relinf_rows.extend(_pair_rows(metric, ckpt, probes, evals, dots, sqnorms, relinf, used))
    statistics = compute_study_statistics(
        [
            MetricPairs(m.name, m.probes, m.evals, m.context, tuple(matrices[m.name]))
            for m in spec.metrics
        ]
    )
    return [_score_row(*v, statistics) for v in values], _dedupe(relinf_rows)


def _score_row(
    metric: MetricSpec, ckpt: Checkpoint, value: float, n_pairs: int, stats: StudyStatistics
) -> ScoreRow:
    # The report recomputes these intervals from relinf.csv and tokens.jsonl with the same
    # function and seed, and gets the same numbers.
    (metric_stats,) = (m for m in stats.metrics if m.name == metric.name)
    (estimate,) = (s.estimate for s in metric_stats.steps if s.step == ckpt.step)
    return ScoreRow(
        metric=metric.name,
        context=metric.context,
        probes=metric.probes,
        evals=metric.evals,
        step=ckpt.step,
        checkpoint=str(ckpt.path),
        value=None if math.isnan(value) else value,
        n_pairs=n_pairs,
        ci_low=estimate.ci_low,
        ci_high=estimate.ci_high,
    )


def compute_norm_rows(
    checkpoints: Sequence[Checkpoint],
    grams: Sequence[torch.Tensor],
    tokenized: dict[str, list[TokenizedExample]],
    rows_of: RowMaps,
) -> list[NormRow]:
    """Every scored example's squared (raw) gradient norm (the Gram diagonal), for the
    diagnostics."""
    return [
        NormRow(
            step=ckpt.step,
            checkpoint=str(ckpt.path),
            set=name,
            id=t.example.id,
            task=t.example.task,
            n_completion_tokens=t.n_completion_tokens,
            sqnorm=float(gram[row, row]),
        )
        for ckpt, gram in zip(checkpoints, grams, strict=True)
        for name, toks in tokenized.items()
        for t, row in zip(toks, rows_of.evals[name], strict=True)
    ]


def _pair_rows(metric, ckpt, probes, evals, dots, sqnorms, relinf, used) -> list[RelInfRow]:
    """The ``relinf.csv`` rows of the pairs in the mask ``used``."""
    return [
        RelInfRow(
            step=ckpt.step,
            checkpoint=str(ckpt.path),
            probe_set=metric.probes,
            probe_id=probes[i].id,
            probe_task=probes[i].task,
            eval_set=metric.evals,
            eval_id=evals[j].id,
            eval_task=evals[j].task,
            dot=float(dots[i, j]),
            eval_sqnorm=float(sqnorms[j]),
            relinf=float(relinf[i, j]),
        )
        for i, j in used.nonzero().tolist()
    ]


def _dedupe(rows: list[RelInfRow]) -> list[RelInfRow]:
    """Keep one row per (step, probe, eval): in-task and cross-task metrics never share a pair,
    but two metrics of the same context and sets would."""
    unique: dict[tuple, RelInfRow] = {}
    for row in rows:
        unique.setdefault((row.step, row.probe_set, row.probe_id, row.eval_set, row.eval_id), row)
    return list(unique.values())
