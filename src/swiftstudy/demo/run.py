"""``run_demo``: the whole method end to end, offline, on the bundled model.

The stages: write the demo data and the three recipes' specs (:mod:`swiftstudy.demo.recipes`);
train a short LoRA base run that saves several checkpoints (``run_training``); run the CoT, Clarify
and Eval studies over them in one gradient pass (``run_studies``: a set two studies share is
computed once per checkpoint), then their reports; write ``summary.md`` with each stage's time.
Everything is seeded, so the same seed gives the same numbers, and a rerun resumes: the base run
continues from its newest checkpoint (a finished one is not trained again) and a study from the
checkpoints it has already done.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from swiftstudy.config.yamlio import dump_yaml, load_yaml
from swiftstudy.constants import VERDICTS_JSON
from swiftstudy.demo.recipes import (
    BASE_RUN_DIR,
    DATA_DIR,
    RECIPES,
    RESULTS_DIR,
    TRAIN_SPEC,
    RecipeFiles,
    write_recipes,
)
from swiftstudy.errors import InputError
from swiftstudy.fileio import write_text_atomic
from swiftstudy.provenance import describe_machine
from swiftstudy.report import render_report
from swiftstudy.study import StudyResult, run_studies
from swiftstudy.train import TrainResult, run_training

logger = logging.getLogger(__name__)

DEMO_RECORD = "demo.yaml"
SUMMARY_MD = "summary.md"
#: ``--quick`` trains half as long (one checkpoint, step 10, instead of two) and studies the first
#: QUICK_TASKS of the 12 study tasks: a first look in under 2 minutes on a 2-core CPU.
QUICK_MAX_STEPS = 10
QUICK_TASKS = 6


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` made.

    Attributes:
        out_dir: The demo folder.
        files: The specs and data written.
        training: The base run.
        studies: Each study's result, by recipe name (``cot``, ``clarify``, ``eval``).
        summary: ``summary.md``: every metric at every checkpoint, and where the reports are.
        seconds: Wall-clock time of the whole demo.
        stages: Wall-clock seconds of each stage, in order.
    """

    out_dir: Path
    files: RecipeFiles
    training: TrainResult
    studies: dict[str, StudyResult]
    summary: Path
    seconds: float
    stages: dict[str, float]


def run_demo(
    out_dir: str | Path = "demo-out",
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    command: str | None = None,
) -> DemoResult:
    """Make the demo data, train a base run, run the paper's three studies and report them.

    Uses the bundled SmolLM2-135M-Instruct and needs no network (the README states measured
    times). The studies leave the gradient cache off: the demo's rows are 31 MiB each, about 12
    GB in all, too much to leave behind on a first run; an interrupted study still resumes from
    the checkpoints it finished.

    Args:
        out_dir: Receives ``train.yaml``, ``cot.yaml``, ``clarify.yaml``, ``eval.yaml``, ``data/``,
            ``runs/base/`` (the checkpoints), ``results/<study>/`` (tables, figures,
            ``report.html``), ``summary.md`` and ``demo.yaml`` (the settings). Other files in
            the folder are left alone.
        quick: Train 10 steps (1 checkpoint) instead of 20 (2 checkpoints), and study 6 of the
            12 tasks.
        seed: Seeds the data and the base run.
        progress: Show progress bars while training and computing gradients.
        command: The command line, recorded with each result.

    Returns:
        The files, the base run and the studies.

    Raises:
        InputError: ``out_dir`` holds something other than a demo of the same settings.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    settings = {"seed": seed, "quick": quick}
    _check_out_dir(out_dir, settings)
    logger.info("[1/4] writing the demo data and the study specs to %s", out_dir)
    files = write_recipes(
        out_dir,
        list(RECIPES),
        seed=seed,
        overwrite=True,
        written_by="swiftstudy demo",
        tasks=QUICK_TASKS if quick else None,
    )
    write_text_atomic(out_dir / DEMO_RECORD, dump_yaml(settings))
    trained_at = time.perf_counter()
    logger.info("[2/4] training the base run in %s", out_dir / BASE_RUN_DIR)
    training = run_training(
        files.train_spec,
        out_dir / BASE_RUN_DIR,
        overrides=[f"max_steps={QUICK_MAX_STEPS}"] if quick else (),
        resume=True,
        progress=progress,
        command=command,
    )
    stages = {"data and specs": trained_at - started, "base run": time.perf_counter() - trained_at}
    logger.info(
        "[3/4] the %s studies: one gradient pass over their sets at each checkpoint",
        ", ".join(RECIPES),
    )
    begun = time.perf_counter()
    results = run_studies(
        {out_dir / RESULTS_DIR / name: files.specs[name] for name in RECIPES},
        cache=False,
        report=False,
        progress=progress,
        command=command,
    )
    studies = {name: results[out_dir / RESULTS_DIR / name] for name in RECIPES}
    stages["gradients and tables (the three studies)"] = time.perf_counter() - begun
    for name in RECIPES:
        begun = time.perf_counter()
        render_report(studies[name].out_dir)
        stages[f"{name} report"] = time.perf_counter() - begun
    logger.info("[4/4] writing %s", out_dir / SUMMARY_MD)
    summary = out_dir / SUMMARY_MD
    seconds = time.perf_counter() - started
    write_text_atomic(summary, render_summary(studies, out_dir, seconds, stages))
    return DemoResult(out_dir, files, training, studies, summary, seconds, stages)


def _check_out_dir(out_dir: Path, settings: dict) -> None:
    """Refuse a folder whose demo files are not those of a demo of the same settings."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("exists and is not a folder", path=out_dir, key="--out")
    record = out_dir / DEMO_RECORD
    if not record.is_file():
        specs = [f"{name}.yaml" for name in RECIPES]
        first = Path(BASE_RUN_DIR).parts[0]
        for name in [TRAIN_SPEC, *specs, DATA_DIR, first, RESULTS_DIR, SUMMARY_MD]:
            if (out_dir / name).exists():
                raise InputError(
                    f"holds {name} but no {DEMO_RECORD}: use another --out",
                    path=out_dir,
                    key="--out",
                )
        return
    saved, _ = load_yaml(record)
    if saved != settings:
        raise InputError(
            f"holds a demo made with other settings ({saved}); use another --out",
            path=out_dir,
            key="--out",
        )


def render_summary(
    studies: dict[str, StudyResult],
    out_dir: Path,
    seconds: float,
    stages: dict[str, float] | None = None,
) -> str:
    """``summary.md``: the time of each stage, then each study's verdicts against its controls,
    its metrics by checkpoint and their mean, and its report."""
    lines = ["# swiftstudy demo", "", f"Made in {seconds / 60:.1f} minutes.", ""]
    lines += [f"Machine: {describe_machine()}.", ""]
    if stages:
        lines += ["| stage | seconds |", "| :-- | --: |"]
        lines += [f"| {stage} | {value:.0f} |" for stage, value in stages.items()]
        lines.append("")
    for name, result in studies.items():
        steps = [c.step for c in result.checkpoints]
        values: dict[str, dict[int, float | None]] = defaultdict(dict)
        for row in result.scores:
            values[row.metric][row.step] = row.value
        report = result.out_dir.relative_to(out_dir) / "report.html"
        lines += [f"## {name}: [{report}]({report})", ""]
        lines += _verdict_lines(result.out_dir / VERDICTS_JSON)
        lines += ["| metric | " + " | ".join(f"step {s}" for s in steps) + " | mean |"]
        lines += ["| :-- |" + " --: |" * (len(steps) + 1)]
        for metric, by_step in values.items():
            shown = [by_step.get(s) for s in steps]
            known = [v for v in shown if v is not None and not math.isnan(v)]
            mean = sum(known) / len(known) if known else None
            cells = [_number(v) for v in [*shown, mean]]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _verdict_lines(path: Path) -> list[str]:
    """The headline verdicts of a study's ``verdicts.json`` as a Markdown table."""
    if not path.is_file():
        return []
    verdicts = json.loads(path.read_text(encoding="utf-8"))
    headline, level = verdicts["headline"], verdicts["bootstrap"]["level"]
    if not headline["verdicts"]:
        return []
    lines = [
        f"Verdicts against controls ({headline['normalization']}, checkpoints "
        f"{headline['checkpoints']}; margin = strategy − control, {level:.0%} interval):",
        "",
        "| strategy | verdict | margin | RelInf mean |",
        "| :-- | :-- | --: | --: |",
    ]
    for v in headline["verdicts"]:
        margin, relinf = v["margin"], v["relinf_mean_over_checkpoints"]
        interval = (
            "no interval"
            if margin["ci_low"] is None
            else f"[{_number(margin['ci_low'])}, {_number(margin['ci_high'])}]"
        )
        lines.append(
            f"| {v['metric']} | {v['verdict']} | {_number(margin['value'])} {interval} | "
            f"{_number(relinf['value'])} |"
        )
    return [*lines, ""]


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"
