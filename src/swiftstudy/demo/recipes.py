"""The paper's three studies (Section 4) as recipes: a ready study spec over the demo data.

``write_recipes(dir, ["cot"])`` writes ``cot.yaml`` (the study spec, its header showing the
commands that run it and the ``swiftstudy probes`` commands that fill its sets), ``train.yaml`` (a
short base run on the bundled model) and ``data/`` (see :mod:`swiftstudy.demo.dataset`). The spec
reads its checkpoints from ``runs/base/`` beside it, where ``train.yaml``'s run goes.
"""

from __future__ import annotations

import json
import logging
import shlex
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from swiftstudy.constants import BUNDLED_MODEL_ALIAS, CONTEXT_CROSS_TASK, CONTEXT_IN_TASK
from swiftstudy.demo.dataset import (
    BASE_FILE,
    GENERATION_FIELDS,
    PROBES_COMMANDS,
    SETS,
    write_demo_data,
)
from swiftstudy.demo.families import STUDY_FAMILIES
from swiftstudy.errors import InputError
from swiftstudy.fileio import write_text_atomic
from swiftstudy.study.spec import MetricSpec

logger = logging.getLogger(__name__)

TRAIN_SPEC = "train.yaml"
DATA_DIR = "data"
BASE_RUN_DIR = "runs/base"
RESULTS_DIR = "results"
#: The demo base run: the reference LoRA setup, a short schedule, a checkpoint every 10 steps. Two
#: checkpoints: each costs the studies a gradient pass over every set (about 75 s on a 2-core AMD
#: EPYC), and the demo's budget is 5 minutes.
TRAIN_MAX_STEPS = 20
TRAIN_SAVE_STEPS = 10


@dataclass(frozen=True)
class Recipe:
    """One of the paper's studies.

    Attributes:
        name: ``cot``, ``clarify`` or ``eval``; also the spec's file stem.
        question: What the study asks, for the spec's header.
        sets: The sets the spec lists, in order.
        metrics: The metrics, the strategy's first (a report compares each with the later ones);
            the strategy's metrics name the paper's comparison set as their ``control``.
    """

    name: str
    question: str
    sets: tuple[str, ...]
    metrics: tuple[MetricSpec, ...]


def _metrics(
    probes: Sequence[tuple[str, str]],
    evals: Sequence[tuple[str, str]],
    controls: dict[str, str],
) -> tuple[MetricSpec, ...]:
    """The in-task and cross-task metric of each (label, set) of probes on each of evals, with
    the control of each probe set named in ``controls`` (probe set → control probe set)."""
    contexts = ((CONTEXT_IN_TASK, "In-task"), (CONTEXT_CROSS_TASK, "Cross-task"))
    return tuple(
        MetricSpec(f"{p_label} → {c_label} {e_label}", p_set, e_set, context, controls.get(p_set))
        for p_label, p_set in probes
        for e_label, e_set in evals
        for context, c_label in contexts
    )


RECIPES: dict[str, Recipe] = {
    "cot": Recipe(
        "cot",
        "The CoT study (the paper's Section 4.1): do chain-of-thought answers (Z'') teach more "
        "than plain answers (Z) about plain examples of the same task (in-task) and of other "
        "tasks (cross-task)?",
        ("nocot", "similar", "cot"),
        _metrics(
            (("CoT", "cot"), ("non-CoT", "nocot")), (("non-CoT", "similar"),), {"cot": "nocot"}
        ),
    ),
    "clarify": Recipe(
        "clarify",
        "The Clarify study (the paper's Section 4.2): does learning to clarify queries "
        "(Z_clarify) raise good responses (Z'_pos) and lower bad ones (Z'_neg) more than the "
        "clarified examples themselves (Z_pos)?",
        ("neg", "pos", "clarify", "similar_pos", "similar_neg"),
        _metrics(
            (("Clarify", "clarify"), ("Pos", "pos")),
            (("Pos", "similar_pos"), ("Neg", "similar_neg")),
            {"clarify": "pos"},
        ),
    ),
    "eval": Recipe(
        "eval",
        "The Eval study (the paper's Section 4.3): does learning to judge responses (E_pos, "
        "E_neg) raise good responses (Z'_pos) and lower bad ones (Z'_neg), compared with "
        "training on the good examples (Z_pos)?",
        ("eval_pos", "eval_neg", "pos", "similar_pos", "similar_neg"),
        _metrics(
            (("EvalPos", "eval_pos"), ("EvalNeg", "eval_neg"), ("Pos", "pos")),
            (("Pos", "similar_pos"), ("Neg", "similar_neg")),
            {"eval_pos": "pos", "eval_neg": "pos"},
        ),
    ),
}


@dataclass(frozen=True)
class RecipeFiles:
    """What :func:`write_recipes` wrote.

    Attributes:
        directory: The folder.
        specs: Each recipe's study spec, by recipe name.
        train_spec: The base run's train spec.
        data: Each data file, by set name (``base`` for the base-run data).
    """

    directory: Path
    specs: dict[str, Path]
    train_spec: Path
    data: dict[str, Path]


def write_recipes(
    directory: str | Path,
    recipes: Sequence[str],
    *,
    seed: int = 0,
    overwrite: bool = False,
    shown_dir: str | None = None,
    written_by: str | None = None,
    tasks: int | None = None,
) -> RecipeFiles:
    """Write study specs for the named recipes, the base run's train spec and the demo data.

    Args:
        directory: The folder (created if needed).
        recipes: Names from ``RECIPES``.
        seed: Seeds the demo data and the base run.
        overwrite: Replace files of the same names; otherwise any of them existing is refused.
        shown_dir: How the spec headers' commands name the folder (default: as given).
        written_by: The command named in the headers as their writer.
        tasks: Sets of the first ``tasks`` study tasks only (default: all 12; see
            :func:`~swiftstudy.demo.dataset.write_demo_data`).

    Returns:
        The files written.

    Raises:
        InputError: An unknown recipe, or a file that exists (without ``overwrite``).
    """
    directory = Path(directory)
    for name in recipes:
        if name not in RECIPES:
            known = ", ".join(RECIPES)
            raise InputError(f"unknown recipe {name!r} (known recipes: {known})", key="--recipe")
    specs = {name: directory / f"{name}.yaml" for name in recipes}
    train_spec = directory / TRAIN_SPEC
    data_dir = directory / DATA_DIR
    for path in [*specs.values(), train_spec, data_dir]:
        if not overwrite and path.exists():
            raise InputError("already exists; use another folder or --overwrite", path=path)
    data = write_demo_data(data_dir, seed, tasks=tasks)
    shown = shlex.quote(shown_dir if shown_dir is not None else str(directory))
    writer = written_by or f"swiftstudy init --recipe {' '.join(recipes)}"
    write_text_atomic(train_spec, render_train_spec(seed, shown, writer))
    n_tasks = tasks or len(STUDY_FAMILIES)
    for name, path in specs.items():
        write_text_atomic(path, render_study_spec(RECIPES[name], shown, writer, n_tasks))
        logger.info("wrote %s", path)
    return RecipeFiles(directory, specs, train_spec, data)


def render_train_spec(seed: int, shown_dir: str, writer: str) -> str:
    """The base run's train spec: the reference LoRA setup with a short schedule."""
    return f"""\
# The demo's base run: LoRA on the bundled SmolLM2-135M-Instruct over the base tasks (arithmetic,
# the largest number, reversing words, the odd one out), none of which the studies probe. Its
# checkpoints are the model states the studies trace. Written by `{writer}`.
#   swiftstudy train {shown_dir}/{TRAIN_SPEC} --out {shown_dir}/{BASE_RUN_DIR}
model: {BUNDLED_MODEL_ALIAS}
data: {DATA_DIR}/{BASE_FILE}
lora: {{r: 64, alpha: 512, dropout: 0.0, targets: [up_proj, down_proj]}}
lr: 1.0e-4
min_lr: 1.0e-6
warmup_steps: 5
max_steps: {TRAIN_MAX_STEPS}
batch_size: 8
micro_batch_size: 8
save_steps: {TRAIN_SAVE_STEPS}
seed: {seed}
"""


def render_study_spec(
    recipe: Recipe, shown_dir: str, writer: str, tasks: int = len(STUDY_FAMILIES)
) -> str:
    """A recipe's study spec, with a header showing how to run it and how its sets were made
    (from ``tasks`` rule-made tasks)."""
    width = max(len(s) for s in recipe.sets)
    sets = [
        f"  {name + ':':<{width + 1}} {{path: {DATA_DIR}/{SETS[name].file}}}"
        f"  # {SETS[name].symbol}: {SETS[name].note}"
        for name in recipe.sets
    ]
    name_width = max(len(m.name) for m in recipe.metrics) + 3
    metrics = [
        f"  - {{name: {json.dumps(m.name, ensure_ascii=False) + ',':<{name_width}} "
        f"probes: {m.probes + ',':<9} evals: {m.evals + ',':<12} context: {m.context}"
        + (f",{' ' * (10 - len(m.context))} control: {m.control}}}" if m.control else "}")
        for m in recipe.metrics
    ]
    return "\n".join(
        [
            *_header(recipe, shown_dir, writer, tasks),
            f"model: {BUNDLED_MODEL_ALIAS}",
            f"checkpoints: {BASE_RUN_DIR}",
            "sets:",
            *sets,
            "metrics:",
            *metrics,
            "max_length: 1024",
            "batch_size: 8",
            "dtype: float32",
            "",
        ]
    )


def _header(recipe: Recipe, shown_dir: str, writer: str, tasks: int) -> list[str]:
    question = textwrap.wrap(
        recipe.question, 98, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False
    )
    data = f"{shown_dir}/{DATA_DIR}"
    commands = [
        f"#   swiftstudy probes --strategy {strategy} --in {data}/{SETS[in_set].file} "
        f"--out {data}/{SETS[out_set].file} --generator none "
        f"--generation-field {GENERATION_FIELDS[strategy]}"
        for out_set, (strategy, in_set) in PROBES_COMMANDS.items()
        if out_set in recipe.sets or (out_set == "similar" and "similar_pos" in recipe.sets)
    ]
    return [
        *question,
        f"# Written by `{writer}`.",
        "# Run it (relative paths in this file resolve against its folder):",
        f"#   swiftstudy train {shown_dir}/{TRAIN_SPEC} --out {shown_dir}/{BASE_RUN_DIR}"
        "   # the checkpoints",
        f"#   swiftstudy study {shown_dir}/{recipe.name}.yaml --out "
        f"{shown_dir}/{RESULTS_DIR}/{recipe.name}",
        f"# The sets hold one example for each of {tasks} rule-made tasks whose answers a program",
        "# checks. These `probes` commands made them from answers written by rule into the",
        "# references; with your own references, use a generator instead of `--generator none",
        "# --generation-field ...` (`--generator openai --base-url URL`, or `--generator hf`), and",
        "# your own run as `checkpoints:`.",
        *commands,
    ]
