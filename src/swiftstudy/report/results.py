"""A study's result tables: their columns and rows, the text the study writes, and reading it back.

``scores.csv``, ``relinf.csv``, ``norms.csv`` and ``tokens.jsonl`` are defined here once, for the
study that writes them (``render_*``) and for the report and ``validate`` that read them (other
tools read them too: the names and columns are part of the interface). Readers require only the
columns they use, chosen from the same definitions (:func:`select_columns`).

Nothing here recomputes a gradient. ``relinf.csv`` holds every pair a metric uses and
``tokens.jsonl`` every scored example in set order, so each metric's ``(P, E)`` RelInf matrix and
pair mask are rebuilt exactly as the study had them, and its bootstrap intervals come out the same.
``norms.csv`` is optional: result folders written before it existed have none.

The scoring variants are rebuilt from the same files: ``relinf.csv`` keeps each pair's dot product
and the eval example's squared norm, ``norms.csv`` every example's squared norm and
``tokens.jsonl`` its completion tokens (``build_metric_pairs`` with a normalization), and
``config.yaml`` each checkpoint's learning rate.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from swiftstudy.config.yamlio import load_yaml
from swiftstudy.constants import (
    CONFIG_YAML,
    DEFAULT_VERDICT_VARIANT,
    NORMALIZATION_COSINE,
    NORMALIZATION_RELINF,
    NORMS_CSV,
    RELINF_CSV,
    SCORES_CSV,
    TOKENS_JSONL,
)
from swiftstudy.errors import InputError
from swiftstudy.scores import MetricPairs, PairMatrix, compute_pair_mask, normalize_pair_scores


def column_names(row_type: type) -> tuple[str, ...]:
    """A table's columns: the fields of its row dataclass, in order (its schema, written once)."""
    return tuple(f.name for f in fields(row_type))


def select_columns(columns: Sequence[str], *names: str) -> tuple[str, ...]:
    """``names``, in the table's column order: the columns a reader requires.

    Raises:
        ValueError: A name is not a column of the table (a reader out of step with the writer).
    """
    unknown = sorted(set(names) - set(columns))
    if unknown:
        raise ValueError(f"not a column of the table: {', '.join(unknown)}")
    return tuple(c for c in columns if c in names)


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


#: Each table's columns, in the order they are written: its row's fields.
SCORES_COLUMNS = column_names(ScoreRow)
RELINF_COLUMNS = column_names(RelInfRow)
NORMS_COLUMNS = column_names(NormRow)

#: What the readers here use of each table; older folders may lack the other columns.
_SCORES_READ = select_columns(SCORES_COLUMNS, "metric", "step", "n_pairs")
_RELINF_READ = select_columns(
    RELINF_COLUMNS,
    "step",
    "probe_set",
    "probe_id",
    "eval_set",
    "eval_id",
    "dot",
    "eval_sqnorm",
    "relinf",
)


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


@dataclass(frozen=True)
class MetricDefinition:
    """A metric as the study defined it (``control``: its control probe set, or None)."""

    name: str
    probes: str
    evals: str
    context: str
    control: str | None = None


@dataclass(frozen=True)
class ExampleInfo:
    """A scored example: its set, id, task, completion length, and its last prompt turn's text
    and response (empty in result folders from before ``tokens.jsonl`` kept them)."""

    set: str
    id: str
    task: str
    n_completion_tokens: int
    prompt: str = ""
    response: str = ""


@dataclass(frozen=True)
class StudyTables:
    """The saved tables of one study.

    Attributes:
        out_dir: The result folder.
        config: ``config.yaml``: the resolved spec, provenance and checkpoints.
        metrics: The metrics in spec order.
        steps: The checkpoints' steps, ascending.
        examples: Each scored set's examples, in set order.
        relinf: ``(step, probe set, eval set)`` → ``{(probe id, eval id): RelInf}``.
        n_pairs: ``(metric, step)`` → pairs, as ``scores.csv`` has it.
        norms: ``norms.csv``, or None when the folder has none.
        dots: Keyed like ``relinf``: ``{(probe id, eval id): (dot, eval sqnorm)}``.
        learning_rates: Step → the learning rate of the interval that ended there, from
            ``config.yaml``; None when a checkpoint has none (no ``trainer_state.json``).
        verdict: The headline's ``(normalization, checkpoints)`` variant from the spec.
    """

    out_dir: Path
    config: dict[str, Any]
    metrics: tuple[MetricDefinition, ...]
    steps: tuple[int, ...]
    examples: dict[str, tuple[ExampleInfo, ...]]
    relinf: dict[tuple[int, str, str], dict[tuple[str, str], float]]
    n_pairs: dict[tuple[str, int], int]
    norms: tuple[NormRow, ...] | None
    dots: dict[tuple[int, str, str], dict[tuple[str, str], tuple[float, float]]]
    learning_rates: dict[int, float] | None = None
    verdict: tuple[str, str] = DEFAULT_VERDICT_VARIANT


def load_study_tables(out_dir: str | Path) -> StudyTables:
    """Read a result folder written by ``run_study``.

    Raises:
        InputError: The folder is not a complete study result, or a table is malformed.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError("no such result folder", path=out_dir)
    for name in (CONFIG_YAML, SCORES_CSV, RELINF_CSV, TOKENS_JSONL):
        if not (out_dir / name).is_file():
            raise InputError(
                f"missing {name}: not a complete study result (run `swiftstudy study` first)",
                path=out_dir,
            )
    config, _ = load_yaml(out_dir / CONFIG_YAML)
    if not isinstance(config, dict) or not isinstance(config.get("spec"), dict):
        raise InputError("expected the resolved study config", path=out_dir / CONFIG_YAML)
    metrics = _metrics(config, out_dir / CONFIG_YAML)
    n_pairs: dict[tuple[str, int], int] = {}
    for line, row in read_csv(out_dir / SCORES_CSV, _SCORES_READ):
        n_pairs[row["metric"], _number(row, "step", out_dir / SCORES_CSV, line, int)] = _number(
            row, "n_pairs", out_dir / SCORES_CSV, line, int
        )
    pairs = list(_read_pairs(out_dir / RELINF_CSV))
    examples = _read_examples(out_dir / TOKENS_JSONL)
    norms_path = out_dir / NORMS_CSV
    norms = _read_norms(norms_path) if norms_path.is_file() else None
    return _assemble(out_dir, config, metrics, n_pairs, pairs, examples, norms)


def build_study_tables(
    config: dict[str, Any],
    scores: Iterable[ScoreRow],
    relinf: Iterable[RelInfRow],
    norms: Iterable[NormRow],
    tokens: Iterable[dict[str, Any]],
    out_dir: Path | None = None,
) -> StudyTables:
    """The tables a study's rows make, as ``load_study_tables`` reads them once saved.

    Args:
        config: The resolved config (``config.yaml``).
        scores, relinf, norms: The rows of the CSV files.
        tokens: The records of ``tokens.jsonl``.
        out_dir: The result folder, if the rows are saved in one.
    """
    return _assemble(
        Path("session") if out_dir is None else out_dir,
        config,
        _metrics(config, Path(CONFIG_YAML)),
        {(r.metric, r.step): r.n_pairs for r in scores},
        relinf,
        [_example_info(record) for record in tokens],
        tuple(norms),
    )


def _assemble(
    out_dir: Path,
    config: dict[str, Any],
    metrics: tuple[MetricDefinition, ...],
    n_pairs: dict[tuple[str, int], int],
    pairs: Iterable[RelInfRow],
    examples: Iterable[ExampleInfo],
    norms: tuple[NormRow, ...] | None,
) -> StudyTables:
    """The tables, with the pairs keyed by step and sets, then ids, and the examples by set."""
    relinf: dict[tuple[int, str, str], dict[tuple[str, str], float]] = {}
    dots: dict[tuple[int, str, str], dict[tuple[str, str], tuple[float, float]]] = {}
    for pair in pairs:
        key, ids = (pair.step, pair.probe_set, pair.eval_set), (pair.probe_id, pair.eval_id)
        relinf.setdefault(key, {})[ids] = pair.relinf
        dots.setdefault(key, {})[ids] = (pair.dot, pair.eval_sqnorm)
    by_set: dict[str, list[ExampleInfo]] = {}
    for info in examples:
        by_set.setdefault(info.set, []).append(info)
    return StudyTables(
        out_dir=out_dir,
        config=config,
        metrics=metrics,
        steps=tuple(sorted({step for _, step in n_pairs})),
        examples={name: tuple(infos) for name, infos in by_set.items()},
        relinf=relinf,
        n_pairs=n_pairs,
        norms=norms,
        dots=dots,
        learning_rates=_learning_rates(config),
        verdict=_verdict(config),
    )


def build_metric_pairs(
    tables: StudyTables, normalization: str = NORMALIZATION_RELINF
) -> list[MetricPairs]:
    """Each metric's pair scores and pair mask at every step, as the study computed them.

    A pair is used when the metric's context selects it and ``relinf.csv`` has it (the study
    leaves out the pairs of evaluation examples whose gradient is zero). ``relinf`` takes the
    saved RelInf; another normalization (``scores.normalize_pair_scores``) recomputes each pair's
    score from its dot product, the squared norms and the completion tokens.

    Raises:
        InputError: A pair names no scored example, or ``cosine`` without ``norms.csv``.
    """
    rescore = normalization != NORMALIZATION_RELINF
    sqnorms = _sqnorms(tables, normalization) if rescore else None
    result = []
    for metric in tables.metrics:
        for name in (metric.probes, metric.evals):
            if name not in tables.examples:
                raise InputError(f"no examples of set {name!r}", path=tables.out_dir / TOKENS_JSONL)
        probes, evals = tables.examples[metric.probes], tables.examples[metric.evals]
        mask = compute_pair_mask(
            [e.task for e in probes], [e.task for e in evals], metric.context
        ).numpy()
        row = {e.id: i for i, e in enumerate(probes)}
        col = {e.id: j for j, e in enumerate(evals)}
        matrices = []
        for step in tables.steps:
            key = (step, metric.probes, metric.evals)
            relinf, dots = np.zeros(mask.shape), np.zeros(mask.shape)
            eval_sqnorms = np.zeros(len(evals))
            present = np.zeros_like(mask)
            # ``dots`` holds the same pairs as ``relinf``: both are keyed from relinf.csv's rows.
            pair_dots = tables.dots.get(key, {})
            for (probe_id, eval_id), value in tables.relinf.get(key, {}).items():
                if probe_id not in row or eval_id not in col:
                    raise InputError(
                        f"step {step}: pair ({probe_id!r}, {eval_id!r}) of no scored example",
                        path=tables.out_dir / RELINF_CSV,
                    )
                i, j = row[probe_id], col[eval_id]
                relinf[i, j], present[i, j] = value, True
                if rescore:
                    dots[i, j], eval_sqnorms[j] = pair_dots[probe_id, eval_id]
            if rescore:
                probe_sqnorms = None
                if sqnorms is not None:
                    probe_sqnorms = np.array(
                        [sqnorms.get((step, metric.probes, e.id), 0.0) for e in probes]
                    )
                relinf, valid = normalize_pair_scores(
                    dots,
                    probe_sqnorms,
                    eval_sqnorms,
                    np.array([e.n_completion_tokens for e in probes], dtype=np.float64),
                    np.array([e.n_completion_tokens for e in evals], dtype=np.float64),
                    normalization,
                )
                present &= valid[None, :]
            matrices.append(PairMatrix(step, relinf, mask & present))
        result.append(
            MetricPairs(metric.name, metric.probes, metric.evals, metric.context, tuple(matrices))
        )
    return result


def _sqnorms(tables: StudyTables, normalization: str) -> dict[tuple[int, str, str], float] | None:
    if tables.norms is None:
        if normalization == NORMALIZATION_COSINE:
            raise InputError(
                f"the cosine normalization needs {NORMS_CSV}; rerun the study",
                path=tables.out_dir,
            )
        return None
    return {(r.step, r.set, r.id): r.sqnorm for r in tables.norms}


def _learning_rates(config: dict[str, Any]) -> dict[int, float] | None:
    """Step → learning rate from ``config.yaml``'s checkpoints; None unless every one has it."""
    entries = config.get("checkpoints")
    if not isinstance(entries, list) or not entries:
        return None
    rates = {}
    for entry in entries:
        rate = entry.get("learning_rate") if isinstance(entry, dict) else None
        if not isinstance(rate, int | float) or isinstance(rate, bool):
            return None
        rates[int(entry["step"])] = float(rate)
    return rates


def _verdict(config: dict[str, Any]) -> tuple[str, str]:
    verdict = config["spec"].get("verdict")
    if not isinstance(verdict, dict):
        return DEFAULT_VERDICT_VARIANT
    return (
        str(verdict.get("normalization", DEFAULT_VERDICT_VARIANT[0])),
        str(verdict.get("checkpoints", DEFAULT_VERDICT_VARIANT[1])),
    )


def _metrics(config: dict[str, Any], path: Path) -> tuple[MetricDefinition, ...]:
    try:
        return tuple(
            MetricDefinition(
                str(m["name"]),
                str(m["probes"]),
                str(m["evals"]),
                str(m["context"]),
                None if m.get("control") is None else str(m["control"]),
            )
            for m in config["spec"]["metrics"]
        )
    except (KeyError, TypeError) as err:
        raise InputError(f"malformed metrics ({err})", path=path, key="spec.metrics") from err


class MissingColumnsError(InputError):
    """A table lacks columns its reader requires (``missing``), found at its header line."""

    def __init__(self, missing: Sequence[str], path: Path) -> None:
        super().__init__(f"missing column(s) {', '.join(missing)}", path=path, line=1)
        self.missing = tuple(missing)


def read_csv(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """The rows of a CSV table with their line numbers, once its header has every ``required``.

    Raises:
        MissingColumnsError: The header lacks a required column.
        OSError: The file cannot be read.
    """
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or ())]
        if missing:
            raise MissingColumnsError(missing, path)
        yield from enumerate(reader, start=2)


def _number(row: dict[str, str], key: str, path: Path, line: int, kind: type = float) -> Any:
    """``row[key]`` as a finite ``kind`` (``int`` or ``float``)."""
    try:
        value = kind(row[key])
    except (TypeError, ValueError) as err:
        what = "an integer" if kind is int else "a number"
        raise InputError(
            f"expected {what}, got {row[key]!r}", path=path, line=line, key=key
        ) from err
    if not math.isfinite(value):
        raise InputError(f"not a finite number: {row[key]!r}", path=path, line=line, key=key)
    return value


def _example_info(record: dict[str, Any]) -> ExampleInfo:
    return ExampleInfo(
        set=str(record["set"]),
        id=str(record["id"]),
        task=str(record["task"]),
        n_completion_tokens=int(sum(record["completion_mask"])),
        prompt=str(record.get("prompt", "")),
        response=str(record.get("response", "")),
    )


def _read_examples(path: Path) -> list[ExampleInfo]:
    examples = []
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            try:
                examples.append(_example_info(json.loads(text)))
            except (ValueError, KeyError, TypeError) as err:
                raise InputError(f"malformed record ({err})", path=path, line=line) from err
    return examples


def _read_pairs(path: Path) -> Iterator[RelInfRow]:
    """The pairs of ``relinf.csv``, in file order; the columns not read are left empty."""
    for line, row in read_csv(path, _RELINF_READ):
        yield RelInfRow(
            step=_number(row, "step", path, line, int),
            checkpoint="",
            probe_set=row["probe_set"],
            probe_id=row["probe_id"],
            probe_task="",
            eval_set=row["eval_set"],
            eval_id=row["eval_id"],
            eval_task="",
            relinf=_number(row, "relinf", path, line),
            dot=_number(row, "dot", path, line),
            eval_sqnorm=_number(row, "eval_sqnorm", path, line),
        )


def _read_norms(path: Path) -> tuple[NormRow, ...]:
    return tuple(
        NormRow(
            step=_number(row, "step", path, line, int),
            checkpoint=row["checkpoint"],
            set=row["set"],
            id=row["id"],
            task=row["task"],
            n_completion_tokens=_number(row, "n_completion_tokens", path, line, int),
            sqnorm=_number(row, "sqnorm", path, line),
        )
        for line, row in read_csv(path, NORMS_COLUMNS)
    )
