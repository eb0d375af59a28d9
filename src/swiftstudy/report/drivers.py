"""Which probes drive each metric: the probes that help and hurt it most, with their text.

The ranking is ``scores.compute_probe_influence`` on the metric's pair matrices; this module names
the probes (id, task, the first words of prompt and response) and the eval examples each moves
most, for the report's table and ``StudyResult.top_probes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from swiftstudy.report.results import StudyTables, build_metric_pairs
from swiftstudy.scores import MetricPairs, compute_probe_influence

#: Probes listed per direction in the report.
REPORT_TOP_PROBES = 3
#: Eval examples listed per probe.
MOVED_EVALS = 2
#: Words of a prompt or response shown.
FIRST_WORDS = 8
HELPS = "helps"
HURTS = "hurts"


@dataclass(frozen=True)
class ProbeDriver:
    """A probe that moves a metric, and the eval examples it moves most.

    Attributes:
        metric: The metric's name.
        effect: ``helps`` (mean RelInf > 0) or ``hurts`` (< 0).
        rank: 1 for the probe that helps (hurts) most.
        probe_set: The probe's set.
        probe_id: The probe's id.
        task: The probe's task.
        mean_relinf: Its mean RelInf over checkpoints and eval examples.
        n_pairs: Its (checkpoint, eval) pairs.
        prompt: The first words of its last prompt turn ("" when the folder has no text).
        response: The first words of its response.
        moved_evals: The ids of the eval examples it moves most, ``|`` separated.
        moved_relinf: Their mean RelInf over checkpoints, in the same order.
    """

    metric: str
    effect: str
    rank: int
    probe_set: str
    probe_id: str
    task: str
    mean_relinf: float
    n_pairs: int
    prompt: str
    response: str
    moved_evals: tuple[str, ...]
    moved_relinf: tuple[float, ...]


@dataclass(frozen=True)
class MetricDrivers:
    """A metric's probes that help and hurt most, and how many probes lie on each side."""

    metric: str
    n_probes: int
    n_helping: int
    n_hurting: int
    drivers: tuple[ProbeDriver, ...]


def find_metric_drivers(tables: StudyTables, metric: str, k: int) -> MetricDrivers:
    """The ``k`` probes that help ``metric`` most and the ``k`` that hurt it most.

    Raises:
        KeyError: No metric has that name.
    """
    pairs = {p.name: p for p in build_metric_pairs(tables)}
    if metric not in pairs:
        raise KeyError(f"no metric named {metric!r} (metrics: {', '.join(pairs)})")
    return describe_drivers(pairs[metric], tables, k)


def describe_drivers(pairs: MetricPairs, tables: StudyTables, k: int) -> MetricDrivers:
    """Name the top probes of one metric's pairs (see ``find_metric_drivers``)."""
    probes = tables.examples[pairs.probes]
    evals = tables.examples[pairs.evals]
    influence = compute_probe_influence(
        np.stack([np.asarray(m.relinf, dtype=np.float64) for m in pairs.matrices]),
        np.stack([np.asarray(m.used, dtype=bool) for m in pairs.matrices]),
        k,
        MOVED_EVALS,
    )
    drivers = []
    for effect, indices in ((HELPS, influence.helping), (HURTS, influence.hurting)):
        for rank, p in enumerate(indices, start=1):
            moved = [int(e) for e in influence.top_evals[p] if e >= 0]
            drivers.append(
                ProbeDriver(
                    metric=pairs.name,
                    effect=effect,
                    rank=rank,
                    probe_set=pairs.probes,
                    probe_id=probes[p].id,
                    task=probes[p].task,
                    mean_relinf=float(influence.means[p]),
                    n_pairs=int(influence.n_pairs[p]),
                    prompt=first_words(probes[p].prompt),
                    response=first_words(probes[p].response),
                    moved_evals=tuple(evals[e].id for e in moved),
                    moved_relinf=tuple(float(influence.pair_means[p, e]) for e in moved),
                )
            )
    return MetricDrivers(
        pairs.name, len(probes), influence.n_helping, influence.n_hurting, tuple(drivers)
    )


def first_words(text: str, n: int = FIRST_WORDS) -> str:
    """The first ``n`` words of ``text`` on one line, with ``…`` when there are more."""
    words = text.split()
    return " ".join(words[:n]) + (" …" if len(words) > n else "")


def format_moved(driver: ProbeDriver) -> str:
    """``id (+0.12), id (−0.03)``: the eval examples a probe moves most."""
    return ", ".join(
        f"`{e}` ({v:+.3g})" if math.isfinite(v) else f"`{e}`"
        for e, v in zip(driver.moved_evals, driver.moved_relinf, strict=True)
    )
