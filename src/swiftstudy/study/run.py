"""Run a study: per-example gradients at every checkpoint, RelInf of each pair, metric means.

The order of work: validate everything that can be checked without a model (spec, sets, pairs,
checkpoints, the output folder), then load the model once, tokenize once, and for each checkpoint
do one forward/backward per batch of unique examples. Each checkpoint's Gram matrix is saved under
``<out>/.partial/`` as soon as it is computed, so a crashed run resumes where it stopped; the
result files are written only at the end, each atomically, and the report is rendered from them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from swiftstudy.constants import CONFIG_YAML, NORMS_CSV, RELINF_CSV, SCORES_CSV, TOKENS_JSONL
from swiftstudy.data import TokenizedExample, load_examples, tokenize_examples
from swiftstudy.errors import InputError
from swiftstudy.fileio import write_text_atomic
from swiftstudy.gradients import (
    compute_gradients,
    default_batch_tokens,
    gradient_dimension,
    plan_batches,
)
from swiftstudy.model import (
    Checkpoint,
    ModelStates,
    discover_checkpoints,
    hash_checkpoint,
    load_base_model,
)
from swiftstudy.provenance import describe_provenance
from swiftstudy.scores import (
    MetricPairs,
    PairMatrix,
    StudyStatistics,
    aggregate_metric,
    compute_dot_products,
    compute_pair_mask,
    compute_relinf,
    compute_study_statistics,
)
from swiftstudy.study.outputs import (
    NormRow,
    RelInfRow,
    ScoreRow,
    render_norms_csv,
    render_relinf_csv,
    render_scores_csv,
    render_tokens_jsonl,
)
from swiftstudy.study.spec import MetricSpec, StudySpec, load_study_spec
from swiftstudy.validation import spec_key_error
from swiftstudy.yamlio import dump_yaml, load_yaml

logger = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"
#: Bumped whenever a change to the engine or rendering changes what a saved Gram matrix means.
PARTIAL_FORMAT = 1
_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass(frozen=True)
class StudyResult:
    """What a study computed (also written to ``out_dir``)."""

    out_dir: Path
    scores: tuple[ScoreRow, ...]
    relinf: tuple[RelInfRow, ...]
    checkpoints: tuple[Checkpoint, ...]


def run_study(
    spec: StudySpec | str | Path,
    out_dir: str | Path,
    *,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> StudyResult:
    """Compute RelInf for every (probe, eval) pair the metrics use, at every checkpoint.

    Args:
        spec: A loaded spec, or the path of a spec YAML file.
        out_dir: Receives ``scores.csv``, ``relinf.csv``, ``norms.csv``, ``tokens.jsonl``,
            ``config.yaml``, then the report: ``verdicts.json``, ``report.html``, ``report.md``
            and ``figures/``.
        overrides: ``key=value`` overrides applied to a spec file (only with a path).
        overwrite: Replace results in ``out_dir`` that were made with a different config.
        progress: Show a progress bar over checkpoints × batches.
        command: The command line that started the run, recorded in ``config.yaml``.

    Returns:
        The score and RelInf rows and the checkpoints, as written.

    Raises:
        InputError: Bad input (spec, data, checkpoints, model); nothing is written in that case.
    """
    if not isinstance(spec, StudySpec):
        spec = load_study_spec(spec, overrides)
    elif overrides:
        raise ValueError("overrides apply to a spec file, not to a loaded StudySpec")
    out_dir = Path(out_dir)
    examples = {s.name: load_examples(s.path, split=s.split) for s in spec.sets}
    _check_pairs(spec, {name: [e.task for e in exs] for name, exs in examples.items()})
    checkpoints = _discover(spec)
    _check_out_dir(out_dir, spec, overwrite)

    device = _resolve_device(spec.device)
    dtype = _DTYPES[spec.dtype]
    model, tokenizer = load_base_model(spec.model, dtype=dtype, device=device)
    tokenized = {
        name: tokenize_examples(
            exs, tokenizer, max_length=spec.max_length, on_overflow=spec.on_overflow
        )
        for name, exs in examples.items()
        if name in _used_sets(spec)
    }
    _check_pairs(spec, {name: [t.example.task for t in toks] for name, toks in tokenized.items()})
    sequences, rows_of = _unique_sequences(tokenized)

    hashes = [hash_checkpoint(c) for c in checkpoints]
    partial = out_dir / PARTIAL_DIR
    states = ModelStates(model, full_params=spec.params, dtype=dtype, device=device)
    for ckpt in checkpoints:
        states.check(ckpt)
    batches = plan_batches(
        [len(ids) for ids, _ in sequences],
        max_examples=spec.batch_size,
        max_tokens=spec.batch_tokens or default_batch_tokens(device),
    )
    grams: list[torch.Tensor] = []
    dims: list[int] = []
    with tqdm(
        total=len(checkpoints) * len(batches), unit="batch", disable=not progress, desc="study"
    ) as bar:
        for ckpt, digest in zip(checkpoints, hashes, strict=True):
            bar.set_postfix_str(f"step {ckpt.step}")
            key = _partial_key(spec, digest, sequences)
            saved = partial / f"{key}.safetensors"
            if saved.is_file():
                logger.info("step %d: reusing %s", ckpt.step, saved)
                stored = load_file(saved)
                grams.append(stored["gram"])
                dims.append(int(stored["dim"]))
                bar.update(len(batches))
                continue
            state, targets = states.load(ckpt)
            modules = [t.module for t in targets]
            grads = compute_gradients(
                state,
                modules,
                sequences,
                pad_id=tokenizer.pad_token_id,
                max_examples=spec.batch_size,
                max_tokens=spec.batch_tokens or default_batch_tokens(device),
                device=device,
                on_batch=lambda _batch: bar.update(1),
            )
            gram = compute_dot_products(grads).cpu()
            del grads
            dim = gradient_dimension(modules)
            _save_partial(saved, gram, dim)
            grams.append(gram)
            dims.append(dim)

    scores, relinf = _tables(spec, checkpoints, grams, tokenized, rows_of)
    norms = _norm_rows(checkpoints, grams, tokenized, rows_of)
    config = _resolved_config(spec, checkpoints, hashes, dims, command)
    _write_outputs(out_dir, scores, relinf, norms, tokenized, config)
    shutil.rmtree(partial, ignore_errors=True)
    logger.info("wrote %s", out_dir)
    # Imported here: the report draws with matplotlib, which the computation does not need.
    from swiftstudy.report import render_report

    render_report(out_dir)
    return StudyResult(out_dir, tuple(scores), tuple(relinf), tuple(checkpoints))


# -- validation before any model work -------------------------------------------------------


def _used_sets(spec: StudySpec) -> set[str]:
    return {m.probes for m in spec.metrics} | {m.evals for m in spec.metrics}


def _check_pairs(spec: StudySpec, tasks: dict[str, list[str]]) -> None:
    """Refuse a metric that would average over no (probe, eval) pair."""
    for index, metric in enumerate(spec.metrics):
        pairs = compute_pair_mask(tasks[metric.probes], tasks[metric.evals], metric.context)
        if not bool(pairs.any()):
            why = (
                "no probe shares a task with an eval example"
                if metric.context == "in-task"
                else "every probe has the same task as every eval example"
            )
            raise spec_key_error(
                spec.spec_path, f"metric {metric.name!r} has no pairs: {why}", ("metrics", index)
            )


def _discover(spec: StudySpec) -> list[Checkpoint]:
    base_dir = spec.spec_path.parent if spec.spec_path else None
    if isinstance(spec.checkpoints, Path):
        return discover_checkpoints(spec.checkpoints, base_dir=base_dir)
    entries = [{"path": str(c.path), "step": c.step} for c in spec.checkpoints]
    for entry in entries:
        if entry["step"] is None:
            del entry["step"]
    return discover_checkpoints(entries, base_dir=base_dir)


def _check_out_dir(out_dir: Path, spec: StudySpec, overwrite: bool) -> None:
    """Refuse to mix results of a different config into ``out_dir``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("exists and is not a folder", path=out_dir, key="--out")
    config = out_dir / CONFIG_YAML
    if overwrite or not config.is_file():
        return
    saved, _ = load_yaml(config)
    if not isinstance(saved, dict) or saved.get("spec") != spec.to_dict():
        raise InputError(
            "holds results of a different study config; use another --out or --overwrite",
            path=out_dir,
            key="--out",
        )


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA is not available on this machine", key="device")
    return resolved


# -- work -----------------------------------------------------------------------------------


def _unique_sequences(
    tokenized: dict[str, list[TokenizedExample]],
) -> tuple[list[tuple[tuple[int, ...], tuple[int, ...]]], dict[str, list[int]]]:
    """Deduplicate examples across sets: one gradient per distinct (tokens, mask)."""
    index: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    rows_of: dict[str, list[int]] = {}
    for name, toks in tokenized.items():
        rows_of[name] = [
            index.setdefault((t.input_ids, t.completion_mask), len(index)) for t in toks
        ]
    return list(index), rows_of


def _partial_key(spec: StudySpec, checkpoint_hash: str, sequences: Sequence) -> str:
    digest = hashlib.sha256()
    settings = {
        "format": PARTIAL_FORMAT,
        "model": spec.model,
        "dtype": spec.dtype,
        "params": list(spec.params),
        "checkpoint": checkpoint_hash,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for ids, mask in sequences:
        digest.update(json.dumps([ids, mask]).encode())
    return digest.hexdigest()[:32]


def _save_partial(path: Path, gram: torch.Tensor, dim: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"gram": gram.contiguous(), "dim": torch.tensor(dim)}, str(tmp))
    tmp.replace(path)


def _tables(
    spec: StudySpec,
    checkpoints: Sequence[Checkpoint],
    grams: Sequence[torch.Tensor],
    tokenized: dict[str, list[TokenizedExample]],
    rows_of: dict[str, list[int]],
) -> tuple[list[ScoreRow], list[RelInfRow]]:
    """Metric means with their intervals, and the RelInf of every pair the metrics use."""
    values: list[tuple[MetricSpec, Checkpoint, float, int]] = []
    relinf_rows: list[RelInfRow] = []
    matrices: dict[str, list[PairMatrix]] = {m.name: [] for m in spec.metrics}
    for ckpt, gram in zip(checkpoints, grams, strict=True):
        for metric in spec.metrics:
            probes = [t.example for t in tokenized[metric.probes]]
            evals = [t.example for t in tokenized[metric.evals]]
            dots = gram[rows_of[metric.probes]][:, rows_of[metric.evals]]
            sqnorms = gram[rows_of[metric.evals], rows_of[metric.evals]]
            relinf, valid = compute_relinf(dots, sqnorms)
            pairs = compute_pair_mask(
                [e.task for e in probes], [e.task for e in evals], metric.context
            )
            value = aggregate_metric(relinf, valid, pairs)
            _warn_excluded(metric, ckpt, value.n_excluded_evals)
            values.append((metric, ckpt, value.value, value.n_pairs))
            matrices[metric.name].append(
                PairMatrix(ckpt.step, relinf.numpy(), (pairs & valid.unsqueeze(0)).numpy())
            )
            relinf_rows.extend(
                _pair_rows(metric, ckpt, probes, evals, dots, sqnorms, relinf, valid, pairs)
            )
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


def _norm_rows(
    checkpoints: Sequence[Checkpoint],
    grams: Sequence[torch.Tensor],
    tokenized: dict[str, list[TokenizedExample]],
    rows_of: dict[str, list[int]],
) -> list[NormRow]:
    """Every scored example's squared gradient norm (the Gram diagonal), for the diagnostics."""
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
        for t, row in zip(toks, rows_of[name], strict=True)
    ]


def _pair_rows(metric, ckpt, probes, evals, dots, sqnorms, relinf, valid, pairs) -> list[RelInfRow]:
    used = (pairs & valid.unsqueeze(0)).nonzero().tolist()
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
        for i, j in used
    ]


def _dedupe(rows: list[RelInfRow]) -> list[RelInfRow]:
    """Keep one row per (step, probe, eval): in-task and cross-task metrics never share a pair,
    but two metrics of the same context and sets would."""
    seen: set[tuple] = set()
    unique = []
    for row in rows:
        key = (row.step, row.probe_set, row.probe_id, row.eval_set, row.eval_id)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def _warn_excluded(metric: MetricSpec, ckpt: Checkpoint, n: int) -> None:
    if n:
        logger.warning(
            "step %d, %s: %d eval example(s) have a zero gradient, hence no RelInf: left out",
            ckpt.step,
            metric.name,
            n,
        )


# -- outputs --------------------------------------------------------------------------------


def _resolved_config(spec, checkpoints, hashes, dims, command) -> dict:
    return {
        "spec": spec.to_dict(),
        **describe_provenance(command),
        "checkpoints": [
            {"step": c.step, "path": str(c.path), "kind": c.kind, "sha256": h, "gradient_dim": d}
            for c, h, d in zip(checkpoints, hashes, dims, strict=True)
        ],
    }


def _token_records(tokenized: dict[str, list[TokenizedExample]]) -> list[dict]:
    return [
        {
            "set": name,
            "id": t.example.id,
            "task": t.example.task,
            "input_ids": list(t.input_ids),
            "completion_mask": list(t.completion_mask),
        }
        for name, toks in tokenized.items()
        for t in toks
    ]


def _write_outputs(out_dir, scores, relinf, norms, tokenized, config) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / TOKENS_JSONL, render_tokens_jsonl(_token_records(tokenized)))
    write_text_atomic(out_dir / RELINF_CSV, render_relinf_csv(relinf))
    write_text_atomic(out_dir / NORMS_CSV, render_norms_csv(norms))
    write_text_atomic(out_dir / SCORES_CSV, render_scores_csv(scores))
    # config.yaml last: its presence marks a complete result (the report is derived from it).
    write_text_atomic(out_dir / CONFIG_YAML, dump_yaml(config))
