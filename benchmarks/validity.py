"""Predictive validity: does a swift study's verdict predict what retraining on the data does?

    python benchmarks/validity.py                 # the full run (see the README for its time)
    python benchmarks/validity.py --quick         # a smoke test of every stage (the test suite)
    python benchmarks/validity.py --setups r64    # one LoRA set-up only

For each LoRA set-up (r=64/alpha=512, the reference, and r=16/alpha=32), on the bundled
SmolLM2-135M-Instruct, offline:

1. **data** (``validity_data.py``): four rule-made one-number tasks with checkers; 180 graded eval
   queries; seven strategies (similar, cot, eval, clarify, off_by, random, unrelated), each with
   its retraining data (152 examples) and a probe set (16); the base data holds 8 examples of each
   evaluated task, so accuracy can fall as well as rise.
2. **base run** (``swiftstudy train``): 30 steps of 8, a checkpoint every 10 steps.
3. **swift study** (``swiftstudy study``): every strategy's probes against 16 study eval
   examples of the evaluated tasks (``context: all``) at the three checkpoints.
4. **retraining** (``swiftstudy validate``): each strategy, from the base run's last checkpoint,
   2 epochs on its data, for each seed; every run answers the 180 queries greedily, graded
   strictly (``exact``) and, from the same answers, leniently (the last number); and the
   reference answers' NLL (``delta_nll``) is measured by one forward pass.
5. **agreement**: for every scoring variant (normalisation × checkpoint weighting) Spearman's
   rank correlation of the score with −Δnll and with strict and lenient Δaccuracy (gains averaged
   over seeds), the sign agreement with Δaccuracy, and the sign agreement of the margin over the
   control (``unrelated``) with the gain over the control's run.

Everything is written under ``--out`` (default ``validity-out/``) and reused by a rerun: finished
base runs, the gradient cache, finished retraining runs and their answers. The table is printed
and written to ``<out>/validity.md``; every number to ``<out>/validity.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe_machine
from validity_data import CONTROLS, STRATEGIES, DataSize, ValidityData, write_validity_data

from swiftstudy.constants import (
    CHECKPOINT_WEIGHTINGS,
    NORMALIZATIONS,
)
from swiftstudy.model import discover_checkpoints, load_learning_rate_log
from swiftstudy.report.results import build_metric_pairs, load_study_tables
from swiftstudy.scores import PairMatrix, compute_pair_mask, compute_rank_correlation
from swiftstudy.scores.variants import (
    compute_checkpoint_weights,
    compute_interval_learning_rates,
)
from swiftstudy.validate.evaluators import extract_last_number

logger = logging.getLogger("validity")

EVALS = "evals"


@dataclass(frozen=True)
class Setup:
    """A LoRA set-up: its rank, alpha and learning rate (base run and retraining alike)."""

    name: str
    r: int
    alpha: int
    lr: float


#: lr × alpha / r is the same for both, so the two set-ups take steps of similar size.
SETUPS = {
    "r64": Setup("r64", 64, 512, 1.0e-4),
    "r16": Setup("r16", 16, 32, 4.0e-4),
}


@dataclass(frozen=True)
class Size:
    """How big a benchmark run is."""

    data: DataSize
    base_steps: int
    save_steps: int
    retrain_epochs: int
    retrain_max_steps: int | None
    seeds: tuple[int, ...]
    max_new_tokens: int


FULL = Size(DataSize(45, 4, 4, 38, 8, 60), 30, 10, 2, None, (0, 1), 12)
# The first warm-up step has learning rate 0: a quick retraining takes two.
QUICK = Size(DataSize(2, 1, 1, 2, 1, 2), 4, 2, 1, 2, (0,), 4)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("validity-out"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated: r64,r16")
    parser.add_argument(
        "--seeds", type=int, default=None, help="retraining seeds (default: 2, --quick 1)"
    )
    parser.add_argument(
        "--reanalyze",
        action="store_true",
        help="recompute the scores and agreement from the saved runs, keeping their timings",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    setups = [SETUPS[name] for name in args.setups.split(",")]
    size = QUICK if args.quick else FULL
    if args.seeds is not None:
        size = replace(size, seeds=tuple(range(args.seeds)))
    if args.reanalyze:
        for setup in setups:
            reanalyze_setup(args.out / setup.name)
    else:
        run_benchmark(args.out, size, setups, progress=not args.no_progress)
    results = collect_results(args.out)
    table = render_table(results)
    print(table)
    (args.out / "validity.md").write_text(table)
    (args.out / "validity.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


def run_benchmark(out: Path, size: Size, setups: Sequence[Setup], *, progress: bool) -> None:
    """Every stage for every set-up, each set-up's result saved as ``<out>/<setup>/result.json``.

    Set-ups may be run one call at a time (``--setups r64``, then ``--setups r16``): the table
    shows every set-up whose result is in ``out``.
    """
    data = write_validity_data(out / "data", size.data)
    for setup in setups:
        started = time.monotonic()
        result = _run_setup(out / setup.name, data, size, setup, progress)
        result.update(
            machine=_machine(), size=asdict(size), wall_s=round(time.monotonic() - started, 1)
        )
        (out / setup.name / "result.json").write_text(json.dumps(result, indent=1) + "\n")


def reanalyze_setup(root: Path) -> None:
    """Recompute a finished set-up's measured changes, scores and agreement from its files."""
    path = root / "result.json"
    result = json.loads(path.read_text())
    result["changes"] = _measured_changes(root / "validate", result["size"]["seeds"])
    result["scores"] = compute_variant_scores(root / "study", _learning_rates(root / "base"))
    result["agreement"] = compute_variant_agreement(result["scores"], result["changes"])
    path.write_text(json.dumps(result, indent=1) + "\n")


def collect_results(out: Path) -> dict[str, Any]:
    """The saved result of every set-up in ``out``, in ``SETUPS`` order."""
    setups = {}
    for name in SETUPS:
        path = out / name / "result.json"
        if path.is_file():
            setups[name] = json.loads(path.read_text())
    return {"setups": setups}


def _machine() -> str:
    import torch

    return describe_machine(torch.get_num_threads())


def _run_setup(root: Path, data: ValidityData, size: Size, setup: Setup, progress: bool) -> dict:
    from swiftstudy import run_study, run_training, run_validation

    root.mkdir(parents=True, exist_ok=True)
    lora = {"r": setup.r, "alpha": setup.alpha}
    schedule = {"lr": setup.lr, "min_lr": setup.lr / 100, "warmup_steps": 3, "batch_size": 8}
    base_spec = {
        "model": "smollm2",
        "data": [str(data.base)],
        "lora": lora,
        **schedule,
        "max_steps": size.base_steps,
        "save_steps": size.save_steps,
        "micro_batch_size": 8,
        "seed": 0,
    }
    t0 = time.monotonic()
    base = run_training(
        _write(root / "train.yaml", base_spec), root / "base", resume=True, progress=progress
    )
    t1 = time.monotonic()
    last = base.checkpoints[-1].path

    study_spec = {
        "model": "smollm2",
        "checkpoints": str(root / "base"),
        "sets": {EVALS: {"path": str(data.study_evals)}}
        | {s: {"path": str(data.probes[s])} for s in STRATEGIES},
        "metrics": [{"name": s, "probes": s, "evals": EVALS, "context": "all"} for s in STRATEGIES],
        "cache_dir": str(root.parent / "cache"),
    }
    run_study(
        _write(root / "study.yaml", study_spec), root / "study", overwrite=True, progress=progress
    )
    t2 = time.monotonic()

    duration = (
        {"max_steps": size.retrain_max_steps}
        if size.retrain_max_steps
        else {"epochs": size.retrain_epochs}
    )
    validate_spec = {
        "model": "smollm2",
        "eval": {
            "path": str(data.eval),
            "evaluator": "exact",
            "max_new_tokens": size.max_new_tokens,
            "batch_size": 16,
        },
        "train": {"lora": lora, **schedule, **duration, "micro_batch_size": 8, "save_steps": 10**6},
        "runs": [{"name": "base", "checkpoint": str(last)}]
        + [
            {
                "name": _run_name(s, seed),
                "init_from": str(last),
                "data": [str(data.train[s])],
                "seed": seed,
            }
            for s in STRATEGIES
            for seed in size.seeds
        ],
        "baseline": "base",
    }
    validation = run_validation(
        _write(root / "validate.yaml", validate_spec), root / "validate", progress=progress
    )
    t3 = time.monotonic()
    outcome = _measured_changes(root / "validate", size.seeds)
    scores = compute_variant_scores(root / "study", _learning_rates(root / "base"))
    return {
        "setup": asdict(setup),
        "base_s": round(t1 - t0, 1),
        "study_s": round(t2 - t1, 1),
        "retrain_s": round(t3 - t2, 1),
        "retrain_runs": len(validation.runs) - 1,
        "changes": outcome,
        "scores": scores,
        "agreement": compute_variant_agreement(scores, outcome),
    }


def _run_name(strategy: str, seed: int) -> str:
    return f"{strategy}-seed{seed}"


def _write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# -- what retraining did ----------------------------------------------------------------------


def _measured_changes(validate_dir: Path, seeds: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Per strategy: Δnll, strict and lenient Δaccuracy (means over seeds) and their seed spread."""
    with (validate_dir / "accuracy.csv").open(newline="") as handle:
        rows = {row["run"]: row for row in csv.DictReader(handle)}
    lenient = _lenient_accuracy(validate_dir / "predictions.jsonl")
    changes = {}
    for strategy in STRATEGIES:
        names = [_run_name(strategy, seed) for seed in seeds]
        nll = [float(rows[n]["delta_nll"]) for n in names]
        strict = [100 * float(rows[n]["delta"]) for n in names]
        loose = [100 * (lenient[n] - lenient["base"]) for n in names]
        changes[strategy] = {
            "delta_nll": float(np.mean(nll)),
            "delta_accuracy": float(np.mean(strict)),
            "delta_lenient": float(np.mean(loose)),
            "seed_spread_accuracy": float(np.ptp(strict)),
            "seed_spread_nll": float(np.ptp(nll)),
            "per_seed_accuracy": strict,
            "per_seed_nll": nll,
        }
    changes["base"] = {
        "accuracy": 100 * float(rows["base"]["accuracy"]),
        "lenient": 100 * lenient["base"],
        "nll": float(rows["base"]["nll"]),
    }
    return changes


def _lenient_accuracy(predictions: Path) -> dict[str, float]:
    """Each run's accuracy when the last number of the answer counts (the CoT-friendly grader)."""
    correct: dict[str, list[bool]] = {}
    for line in predictions.read_text().splitlines():
        row = json.loads(line)
        got, want = extract_last_number(row["answer"]), extract_last_number(row["golden"])
        correct.setdefault(row["run"], []).append(got is not None and got == want)
    return {run: float(np.mean(values)) for run, values in correct.items()}


# -- what the study predicted -----------------------------------------------------------------


def _learning_rates(run_dir: Path) -> dict[int, float]:
    """Each checkpoint's interval learning rate, from the base run's last trainer_state.json."""
    checkpoints = discover_checkpoints(run_dir)
    logged = load_learning_rate_log(checkpoints[-1])
    steps = [c.step for c in checkpoints]
    rates = compute_interval_learning_rates(steps, *zip(*logged, strict=True))
    return dict(zip(steps, rates.tolist(), strict=True))


#: The pair sets a score averages over: every pair, the same task, other tasks.
CONTEXTS = {
    "all": lambda same: np.ones_like(same),
    "in-task": lambda same: same,
    "cross-task": lambda same: ~same,
}
#: A context scored as the in-task mean minus the cross-task mean at each checkpoint: the part of
#: a probe's effect that is specific to its task, with the direction every short answer shares
#: (which unrelated tasks score as well) taken out.
IN_MINUS_CROSS = "in-minus-cross"


def compute_variant_scores(
    study_dir: Path, learning_rates: dict[int, float]
) -> dict[str, dict[str, Any]]:
    """Every variant's score of every strategy (``None`` where a context has no pair): the mean
    pair score over a context's pairs, normalised, then combined over checkpoints. Variants are
    named ``context/normalization/weighting``."""
    tables = load_study_tables(study_dir)
    metrics = {m.name: m for m in tables.metrics}
    examples = tables.examples
    same_task = {
        name: compute_pair_mask(
            [e.task for e in examples[m.probes]], [e.task for e in examples[m.evals]], "in-task"
        ).numpy()
        for name, m in metrics.items()
    }
    rates = [learning_rates[s] for s in tables.steps]
    scores: dict[str, dict[str, Any]] = {}
    # The study's metrics are named after their strategy and use every pair (context: all).
    pairs = {
        normalization: {m.name: m.matrices for m in build_metric_pairs(tables, normalization)}
        for normalization in NORMALIZATIONS
    }
    for context in [*CONTEXTS, IN_MINUS_CROSS]:
        for normalization in NORMALIZATIONS:
            per_step = {
                strategy: _per_step(pairs[normalization][strategy], same_task[strategy], context)
                for strategy in STRATEGIES
            }
            for weighting in CHECKPOINT_WEIGHTINGS:
                scores[f"{context}/{normalization}/{weighting}"] = {
                    strategy: None
                    if np.isnan(values).all()
                    else float(
                        np.nan_to_num(values) @ compute_checkpoint_weights(values, weighting, rates)
                    )
                    for strategy, values in per_step.items()
                }
            scores[f"{context}/{normalization}/by-step"] = {
                s: [None if np.isnan(v) else round(float(v), 4) for v in values]
                for s, values in per_step.items()
            }
    return scores


def _per_step(matrices: Sequence[PairMatrix], same_task: np.ndarray, context: str) -> np.ndarray:
    """The mean pair score at each checkpoint over the context's pairs (NaN where it has none)."""

    def mean_over(matrix: PairMatrix, context: str) -> float:
        used = matrix.used & CONTEXTS[context](same_task)
        return float(matrix.relinf[used].mean()) if used.any() else float("nan")

    return np.array(
        [
            mean_over(m, "in-task") - mean_over(m, "cross-task")
            if context == IN_MINUS_CROSS
            else mean_over(m, context)
            for m in matrices
        ]
    )


# -- agreement --------------------------------------------------------------------------------


def compute_variant_agreement(
    scores: dict[str, dict[str, Any]], changes: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per variant: Spearman with −Δnll, strict and lenient Δaccuracy; sign agreements.

    Over the strategies the variant scores (in-task has no pair of the unrelated strategy).
    Sign agreement with Δaccuracy: score > 0 and a gain, or score < 0 and a loss (a change of 0
    agrees with neither). Against each control in ``CONTROLS`` (what a study's verdict "helps
    more than / worse than <control>" claims): the margin score − score(control) against the
    gain over the control's run, in strict accuracy and in −Δnll, over the strategies other than
    the control (none where the variant does not score the control).
    """
    result = {}
    for name, by_strategy in scores.items():
        if name.endswith("/by-step"):
            continue
        scored = [s for s in STRATEGIES if by_strategy[s] is not None]
        values = [by_strategy[s] for s in scored]
        targets = {
            "neg_delta_nll": [-changes[s]["delta_nll"] for s in scored],
            "delta_accuracy": [changes[s]["delta_accuracy"] for s in scored],
            "delta_lenient": [changes[s]["delta_lenient"] for s in scored],
        }
        result[name] = {
            **{f"spearman_{k}": compute_rank_correlation(values, v) for k, v in targets.items()},
            "sign_accuracy": _agreements(values, targets["delta_accuracy"]),
            "sign_nll": _agreements(values, targets["neg_delta_nll"]),
            "n": len(values),
            "controls": {c: _control_agreement(by_strategy, changes, c) for c in CONTROLS},
        }
    return result


def _control_agreement(
    by_strategy: dict[str, float | None], changes: dict[str, dict[str, Any]], control: str
) -> dict[str, int]:
    """How often the sign of the margin over ``control`` is the sign of the gain over its run."""
    if by_strategy[control] is None:
        return {"accuracy": 0, "nll": 0, "n": 0}
    others = [s for s in STRATEGIES if s != control and by_strategy[s] is not None]
    margins = [by_strategy[s] - by_strategy[control] for s in others]
    base = changes[control]
    return {
        "accuracy": _agreements(
            margins, [changes[s]["delta_accuracy"] - base["delta_accuracy"] for s in others]
        ),
        "nll": _agreements(margins, [base["delta_nll"] - changes[s]["delta_nll"] for s in others]),
        "n": len(others),
    }


def _agreements(scores: Sequence[float], changes: Sequence[float]) -> int:
    return sum((s > 0 and c > 0) or (s < 0 and c < 0) for s, c in zip(scores, changes, strict=True))


# -- the table --------------------------------------------------------------------------------


def render_table(results: dict[str, Any]) -> str:
    """The Markdown printed and saved: per set-up the strategies, then each variant's agreement."""
    lines = []
    for name, setup in results["setups"].items():
        s = setup["setup"]
        lines += [
            f"## {name}: LoRA r={s['r']}, alpha={s['alpha']}, lr={s['lr']:g}",
            "",
            f"{setup['machine']}; wall time {setup['wall_s']:.0f} s.",
            "",
            f"Base run {setup['base_s']:.0f} s; study {setup['study_s']:.0f} s; retraining "
            f"{setup['retrain_runs']} runs with decoding and NLL {setup['retrain_s']:.0f} s "
            f"(study / retraining = {setup['study_s'] / max(setup['retrain_s'], 1e-9):.2f}).",
            "",
            "| strategy | RelInf mean | RelInf last | Δnll | Δacc strict (pts) | seed spread | "
            "Δacc lenient |",
            "|---|---|---|---|---|---|---|",
        ]
        changes, scores = setup["changes"], setup["scores"]
        for strategy in STRATEGIES:
            c = changes[strategy]
            lines.append(
                f"| {strategy} | {scores['all/relinf/mean'][strategy]:+.3f} | "
                f"{scores['all/relinf/last'][strategy]:+.3f} | {c['delta_nll']:+.2f} | "
                f"{c['delta_accuracy']:+.1f} | {c['seed_spread_accuracy']:.1f} | "
                f"{c['delta_lenient']:+.1f} |"
            )
        base = changes["base"]
        lines += [
            "",
            f"Base: strict accuracy {base['accuracy']:.1f}%, lenient {base['lenient']:.1f}%, "
            f"NLL {base['nll']:.2f}.",
            "",
            "Verdict columns: how often the sign of the margin over the control (what the study's "
            '"helps more than / worse than <control>" says) is the sign of the retrained gain '
            "over the control's run, in −Δnll and in strict accuracy.",
            "",
            "| variant | ρ vs −Δnll | ρ vs Δacc strict | ρ vs Δacc lenient | sign vs Δacc | "
            + " | ".join(f"verdict vs {c}: nll, acc" for c in CONTROLS)
            + " |",
            "|---|---|---|---|---|" + "---|" * len(CONTROLS),
        ]
        for variant, a in setup["agreement"].items():
            verdicts = " | ".join(_verdicts(a["controls"][c]) for c in CONTROLS)
            lines.append(
                f"| {variant} | {_rho(a['spearman_neg_delta_nll'])} | "
                f"{_rho(a['spearman_delta_accuracy'])} | {_rho(a['spearman_delta_lenient'])} | "
                f"{a['sign_accuracy']}/{a['n']} | {verdicts} |"
            )
        lines.append("")
    if len(results["setups"]) > 1:
        lines += render_summary(results)
    return "\n".join(lines)


def rank_variants(results: dict[str, Any]) -> list[tuple[str, float, float]]:
    """Variants by their worst Spearman against −Δnll over the set-ups, then against strict
    Δaccuracy: ``(variant, worst ρ −Δnll, worst ρ Δacc)``, best first (variants without a ρ in
    some set-up last)."""
    setups = list(results["setups"].values())
    ranked = []
    for variant in setups[0]["agreement"]:
        nll = [s["agreement"][variant]["spearman_neg_delta_nll"] for s in setups]
        acc = [s["agreement"][variant]["spearman_delta_accuracy"] for s in setups]
        ranked.append((variant, _worst(nll), _worst(acc)))
    return sorted(ranked, key=lambda v: (-v[1], -v[2], v[0]))


def _worst(rhos: list[float | None]) -> float:
    """The smallest ρ, or −2 (below any ρ) where a set-up has none."""
    return -2.0 if None in rhos else min(rhos)


def render_summary(results: dict[str, Any]) -> list[str]:
    """Every variant across the set-ups, ranked by its worst Spearman against −Δnll."""
    names = list(results["setups"])
    lines = [
        "## Across set-ups",
        "",
        "Ranked by the worst Spearman against −Δnll over the set-ups (then against strict Δacc).",
        "",
        "| variant | "
        + " | ".join(f"ρ −Δnll {n} | ρ Δacc {n} | verdict vs similar {n}" for n in names)
        + " |",
        "|---|" + "---|---|---|" * len(names),
    ]
    for variant, _, _ in rank_variants(results):
        cells = []
        for n in names:
            a = results["setups"][n]["agreement"][variant]
            cells += [
                _rho(a["spearman_neg_delta_nll"]),
                _rho(a["spearman_delta_accuracy"]),
                _verdicts(a["controls"]["similar"]),
            ]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _verdicts(agreement: dict[str, int]) -> str:
    n = agreement["n"]
    return f"{agreement['nll']}/{n}, {agreement['accuracy']}/{n}" if n else "–"


def _rho(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
