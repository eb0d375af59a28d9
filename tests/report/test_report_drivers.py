"""The report's table of the probes that drive each metric, on a hand-computed RelInf matrix."""

from __future__ import annotations

from pathlib import Path

from swiftstudy import render_report
from swiftstudy.config.yamlio import dump_yaml
from swiftstudy.report.drivers import find_metric_drivers, first_words
from swiftstudy.report.results import (
    RelInfRow,
    ScoreRow,
    load_study_tables,
    render_relinf_csv,
    render_scores_csv,
    render_tokens_jsonl,
)
from swiftstudy.scores import BootstrapSettings

METRIC = "Plain → Cross-task"
PROBES = {"p0": "a", "p1": "b", "p2": "c"}  # id: task
EVALS = {"e0": "x", "e1": "y"}
# RelInf[step][probe][eval]; every pair is cross-task and used.
RELINF = {
    10: {"p0": (0.2, 0.4), "p1": (-0.6, 0.0), "p2": (0.1, -0.1)},
    20: {"p0": (0.4, 0.6), "p1": (-0.2, -0.4), "p2": (0.3, 0.1)},
}
PROMPTS = {
    "p0": "Add the two numbers and say only the sum please, nothing else at all",
    "p1": "Sort the words",
    "p2": "Count the letters",
}


def _write_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    records = [
        {
            "set": "plain",
            "id": probe,
            "task": task,
            "prompt": PROMPTS[probe],
            "response": f"answer of {probe}",
            "input_ids": [1, 2, 3],
            "completion_mask": [0, 1, 1],
        }
        for probe, task in PROBES.items()
    ] + [
        {"set": "evals", "id": e, "task": t, "input_ids": [1, 2], "completion_mask": [0, 1]}
        for e, t in EVALS.items()
    ]
    relinf, scores = [], []
    for step, rows in RELINF.items():
        values = [v for pair in rows.values() for v in pair]
        scores.append(
            ScoreRow(METRIC, "cross-task", "plain", "evals", step, "/run", sum(values) / 6, 6)
        )
        for probe, pair in rows.items():
            for (eval_id, eval_task), value in zip(EVALS.items(), pair, strict=True):
                relinf.append(
                    RelInfRow(
                        step, "/run", "plain", probe, PROBES[probe], "evals", eval_id, eval_task,
                        value, 1.0, value,
                    )
                )  # fmt: skip
    (root / "scores.csv").write_text(render_scores_csv(scores))
    (root / "relinf.csv").write_text(render_relinf_csv(relinf))
    (root / "tokens.jsonl").write_text(render_tokens_jsonl(records))
    spec = {
        "model": "tiny",
        "checkpoints": "/run",
        "sets": {"plain": {"path": "/p.jsonl"}, "evals": {"path": "/e.jsonl"}},
        "metrics": [{"name": METRIC, "probes": "plain", "evals": "evals", "context": "cross-task"}],
    }
    config = {"spec": spec, "checkpoints": [{"step": s, "path": "/run"} for s in RELINF]}
    (root / "config.yaml").write_text(dump_yaml(config))
    return root


def test_top_probes_by_hand(tmp_path: Path):
    drivers = find_metric_drivers(load_study_tables(_write_folder(tmp_path / "r")), METRIC, k=2)

    # Means over checkpoints of the means over evals: p0 (0.3 + 0.5) / 2, p1 (-0.3 - 0.3) / 2,
    # p2 (0.0 + 0.2) / 2. Pair means over checkpoints: p0 (0.3, 0.5), p1 (-0.4, -0.2), p2 (0.2, 0).
    assert (drivers.n_probes, drivers.n_helping, drivers.n_hurting) == (3, 2, 1)
    got = [
        (d.effect, d.rank, d.probe_id, d.task, round(d.mean_relinf, 12)) for d in drivers.drivers
    ]
    assert got == [
        ("helps", 1, "p0", "a", 0.4),
        ("helps", 2, "p2", "c", 0.1),
        ("hurts", 1, "p1", "b", -0.3),
    ]
    moved = [(d.moved_evals, tuple(round(v, 12) for v in d.moved_relinf)) for d in drivers.drivers]
    assert moved == [
        (("e1", "e0"), (0.5, 0.3)),
        (("e0", "e1"), (0.2, 0.0)),
        (("e0", "e1"), (-0.4, -0.2)),
    ]
    assert drivers.drivers[0].prompt == "Add the two numbers and say only the …"
    assert drivers.drivers[0].n_pairs == 4


def test_report_has_the_table(tmp_path: Path):
    files = render_report(_write_folder(tmp_path / "r"), settings=BootstrapSettings(n_resamples=50))
    markdown = files.markdown.read_text()

    assert "## Which probes drive each metric" in markdown
    assert f"**{METRIC}**: 2 of 3 probes help on average, 1 hurt." in markdown
    assert (
        "| **helps** | `p0` | a | +0.4 | Add the two numbers and say only the … | answer of p0 "
        "| `e1` (+0.5), `e0` (+0.3) |"
    ) in markdown
    assert (
        "| **hurts** | `p1` | b | -0.3 | Sort the words | answer of p1 | `e0` (-0.4), `e1` (-0.2) |"
    ) in markdown
    html = files.html.read_text()
    assert 'id="drivers"' in html and "<code>p2</code>" in html


def test_first_words():
    assert first_words("  one two\nthree ", n=2) == "one two …"
    assert first_words("one two", n=2) == "one two"
