"""The report's reference sections: the set-up, the method and its rules, how to reproduce.

They describe the study rather than its findings (``content`` builds those), from the saved
config and the analysis.
"""

from __future__ import annotations

import statistics

from swiftstudy.constants import CONFIG_YAML
from swiftstudy.report.analysis import INTERVAL_METHOD, RULES, ReportAnalysis
from swiftstudy.report.document import (
    Block,
    Cell,
    CodeBlock,
    Definitions,
    Paragraph,
    Section,
    Table,
)
from swiftstudy.scores import BootstrapSettings

_PROVENANCE = {
    "swiftstudy_version": "swiftstudy",
    "git_sha": "Git commit",
    "created": "Study run at",
    "torch_version": "PyTorch",
    "transformers_version": "Transformers",
    "peft_version": "PEFT",
}


def _gradient_columns(checkpoint: dict) -> str:
    """The checkpoint table's gradient columns: exact, or the projection's k."""
    if isinstance(checkpoint.get("gradient_dim"), int):
        return f"{checkpoint['gradient_dim']:,}"
    if isinstance(checkpoint.get("row_dim"), int):
        return f"{checkpoint['row_dim']:,} (projected)"
    return ""


def _describe_projection(projection: object) -> str:
    if not isinstance(projection, dict):
        return "exact"
    bound = float(projection.get("relative_error_bound", float("nan")))
    return (
        f"Rademacher random projection to k = {projection.get('dim'):,} dimensions (seed "
        f"{projection.get('seed')}): each dot product ⟨a, b⟩ is unbiased, with a standard error "
        f"of at most √(2/k)·|a||b| = {100 * bound:.2g}% of |a||b|"
    )


def _describe_preconditioner(preconditioner: object) -> str:
    if preconditioner != "adam":
        return "raw gradients"
    return (
        "Adam update directions u(z) from each checkpoint's optimizer state (as LESS); "
        "RelInf = ⟨u(z), ∇ℓ(z0)⟩ / ⟨∇ℓ(z0), ∇ℓ(z0)⟩, not on the scale of raw-gradient RelInf"
    )


def build_setup(analysis: ReportAnalysis) -> Section:
    """Model, gradients, checkpoints, sets and metrics of the study."""
    tables = analysis.tables
    spec = tables.config["spec"]
    roles: dict[str, list[str]] = {}
    for metric in tables.metrics:
        roles.setdefault(metric.probes, []).append("probes")
        roles.setdefault(metric.evals, []).append("evals")
    set_rows = []
    for name, examples in tables.examples.items():
        tokens = sorted(e.n_completion_tokens for e in examples)
        path = (spec.get("sets") or {}).get(name, {}).get("path", "")
        set_rows.append(
            (
                Cell(f"`{name}`"),
                Cell(", ".join(dict.fromkeys(roles.get(name, ["unused"])))),
                Cell(str(len(examples))),
                Cell(str(len({e.task for e in examples}))),
                Cell(f"{statistics.median(tokens):g} ({tokens[0]}–{tokens[-1]})"),
                Cell(f"`{path}`"),
            )
        )
    checkpoint_rows = tuple(
        (
            Cell(str(c.get("step"))),
            Cell(str(c.get("kind", ""))),
            Cell(f"`{c.get('path', '')}`"),
            Cell(f"`{str(c.get('sha256', ''))[:12]}`"),
            Cell(_gradient_columns(c)),
        )
        for c in tables.config.get("checkpoints") or ()
    )
    blocks: tuple[Block, ...] = (
        Definitions(
            (
                ("Model", f"`{spec.get('model')}`"),
                ("Compute dtype", f"`{spec.get('dtype')}` on `{spec.get('device')}`"),
                ("Longest example", f"{spec.get('max_length')} tokens"),
                ("Gradients", _describe_projection(tables.config.get("projection"))),
                ("Probe gradients", _describe_preconditioner(spec.get("preconditioner"))),
            )
        ),
        Paragraph("**Checkpoints.**"),
        Table(
            ("Step", "Kind", "Path", "SHA-256", "Gradient columns"),
            checkpoint_rows,
            id="checkpoint-table",
            numeric=frozenset({0, 4}),
        ),
        Paragraph("**Sets.** Completion tokens are the tokens in the loss."),
        Table(
            ("Set", "Role", "Examples", "Tasks", "Completion tokens: median (range)", "File"),
            tuple(set_rows),
            id="set-table",
            numeric=frozenset({2, 3, 4}),
        ),
        Paragraph("**Metrics.**"),
        Table(
            ("Metric", "Probes", "Evals", "Context"),
            tuple(
                (Cell(m.name), Cell(f"`{m.probes}`"), Cell(f"`{m.evals}`"), Cell(m.context))
                for m in tables.metrics
            ),
            id="metric-table",
        ),
    )
    return Section("setup", "Set-up", blocks)


def build_method(analysis: ReportAnalysis) -> Section:
    """RelInf, the metrics, the interval and every rule the verdicts follow."""
    settings = analysis.statistics.settings
    items = (
        (
            "RelInf",
            "RelInf(z, z₀) = ⟨∇ℓ(z), ∇ℓ(z₀)⟩ / ⟨∇ℓ(z₀), ∇ℓ(z₀)⟩, with ℓ the summed completion "
            "NLL: how much a gradient step on probe z lowers the loss of evaluation example z₀, "
            "relative to a step on z₀ itself.",
        ),
        (
            "Metric",
            "the mean RelInf over the metric's pairs: in-task pairs share a task, cross-task "
            "pairs do not; evaluation examples with a zero gradient are left out.",
        ),
        ("Interval", INTERVAL_METHOD.format(**settings.__dict__)),
        ("Verdict", RULES["verdict"] + "."),
        ("Overall verdict", RULES["overall"] + "."),
        ("Checkpoints with CI > 0", RULES["fraction_positive"] + "."),
        ("Trend", RULES["trend"] + "."),
        ("Overtake", RULES["overtake"] + "."),
        ("Comparison", RULES["comparison"] + "."),
        ("Few pairs", RULES["concentration"] + "."),
        ("Gradient norms", RULES["gradient_norms"] + "."),
    )
    return Section("method", "Method and rules", (Definitions(items),))


def build_reproduce(analysis: ReportAnalysis) -> Section:
    """The command, how to re-render, provenance and the resolved config."""
    tables = analysis.tables
    config = tables.config
    command = config.get("command") or "(not recorded: the study was run from Python)"
    provenance = tuple(
        (label, f"`{config[key]}`")
        for key, label in _PROVENANCE.items()
        if config.get(key) is not None
    )
    settings = analysis.statistics.settings
    rerender = f"swiftstudy report {tables.out_dir}"
    if settings != BootstrapSettings():
        rerender += (
            f" --resamples {settings.n_resamples} --seed {settings.seed} --level {settings.level:g}"
        )
    blocks: tuple[Block, ...] = (
        Paragraph("The command that produced these results:"),
        CodeBlock(str(command), "bash"),
        Paragraph("Re-render this report from the saved tables (no gradients are recomputed):"),
        CodeBlock(rerender, "bash"),
        Definitions(provenance),
        Paragraph(f"The resolved config (`{CONFIG_YAML}`):"),
        CodeBlock((tables.out_dir / CONFIG_YAML).read_text(encoding="utf-8").rstrip("\n"), "yaml"),
    )
    return Section("reproduce", "Reproduce", blocks)
