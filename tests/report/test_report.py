"""Tests for swiftstudy.report: a report rendered from hand-made result tables, and its CLI."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from swiftstudy import ReportFiles, render_report
from swiftstudy.cli.main import main
from swiftstudy.config.yamlio import dump_yaml
from swiftstudy.constants import VALIDITY_NOTE, VERDICT_POSITIVE
from swiftstudy.errors import InputError
from swiftstudy.report.results import (
    NormRow,
    RelInfRow,
    ScoreRow,
    build_metric_pairs,
    load_study_tables,
    render_norms_csv,
    render_relinf_csv,
    render_scores_csv,
    render_tokens_jsonl,
)
from swiftstudy.scores import BootstrapSettings, compute_study_statistics

STEPS = (0, 50, 100)
TASKS = ("add", "cls", "fix", "sort", "count", "spell")
METRICS = (
    ("CoT <b>in</b> & task", "cot", "plain", "in-task"),
    ("CoT → Cross-task", "cot", "plain", "cross-task"),
    ("Plain → In-task", "plain set", "plain", "in-task"),
    ("Plain → Cross-task", "plain set", "plain", "cross-task"),
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LEARNING_RATES = {0: 1e-4, 50: 3e-4, 100: 0.0}


def _relinf(probes: str, step: int, i: int, j: int) -> float:
    """CoT probes help their own task more and more; plain probes are noise around 0."""
    rng = np.random.default_rng([step, i, j, len(probes)])
    if probes == "cot":
        return (0.4 + 0.004 * step if i == j else 0.05) + rng.normal(0, 0.05)
    return float(rng.normal(0, 0.3))


def write_result_folder(
    root: Path, *, norms: bool = True, controls: bool = False, learning_rates: bool = False
) -> Path:
    """A result folder as ``run_study`` writes it, with made-up values (no model needed).

    ``controls``: the CoT metrics name ``plain set`` as their control, and the verdict variant is
    per-token / lr; ``learning_rates``: config.yaml records each checkpoint's learning rate.
    """
    root.mkdir(parents=True, exist_ok=True)
    sets = {"plain": 3, "cot": 25, "plain set": 4}  # completion tokens of each example
    records = [
        {
            "set": name,
            "id": f"{name[0]}{k}",
            "task": task,
            "input_ids": list(range(1, 6 + n)),
            "completion_mask": [0] * 5 + [1] * (n + k % 3),
        }
        for name, n in sets.items()
        for k, task in enumerate(TASKS)
    ]
    scores, relinf, norm_rows = [], [], []
    for step in STEPS:
        checkpoint = f"/run/checkpoint-{step}"
        for name, probes, evals, context in METRICS:
            values = [
                _relinf(probes, step, i, j)
                for i in range(6)
                for j in range(6)
                if (i == j) == (context == "in-task")
            ]
            value = float(np.mean(values))
            row = ScoreRow(name, context, probes, evals, step, checkpoint, value, len(values))
            scores.append(row)
        for probes in ("cot", "plain set"):
            for i, probe_task in enumerate(TASKS):
                for j, eval_task in enumerate(TASKS):
                    value = _relinf(probes, step, i, j)
                    relinf.append(
                        RelInfRow(
                            step, checkpoint, probes, f"{probes[0]}{i}", probe_task, "plain",
                            f"p{j}", eval_task, value * 2.0, 2.0, value,
                        )
                    )  # fmt: skip
        for record in records:
            n = sum(record["completion_mask"])
            norm_rows.append(
                NormRow(step, checkpoint, record["set"], record["id"], record["task"], n, 3.0 * n)
            )
    (root / "scores.csv").write_text(render_scores_csv(scores))
    (root / "relinf.csv").write_text(render_relinf_csv(relinf))
    (root / "tokens.jsonl").write_text(render_tokens_jsonl(records))
    if norms:
        (root / "norms.csv").write_text(render_norms_csv(norm_rows))
    config = {
        "spec": {
            "model": "tiny",
            "checkpoints": "/run",
            "sets": {name: {"path": f"/data/{name}.jsonl", "split": None} for name in sets},
            "metrics": [
                {"name": n, "probes": p, "evals": e, "context": c}
                | ({"control": "plain set"} if controls and p == "cot" else {})
                for n, p, e, c in METRICS
            ],
            "max_length": 2048,
            "dtype": "float64",
            "device": "cpu",
        },
        "command": "swiftstudy study study.yaml --out made-up",
        "swiftstudy_version": "0.1.0",
        "created": "2026-11-25T00:00:00+00:00",
        "checkpoints": [
            {"step": s, "path": f"/run/checkpoint-{s}", "kind": "adapter", "sha256": "ab" * 32}
            | ({"learning_rate": LEARNING_RATES[s]} if learning_rates else {})
            for s in STEPS
        ],
    }
    if controls:
        config["spec"]["verdict"] = {"normalization": "per-token", "checkpoints": "lr"}
    (root / "config.yaml").write_text(dump_yaml(config))
    return root


@pytest.fixture()
def result(tmp_path: Path) -> Path:
    return write_result_folder(tmp_path / "made-up")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> ReportFiles:
    """One report shared by the tests that only read it (rendering takes seconds)."""
    result = write_result_folder(tmp_path_factory.mktemp("rendered") / "made-up")
    return render_report(result, settings=BootstrapSettings(n_resamples=500))


def test_render_report_writes_files_verdicts_and_figures(rendered: ReportFiles):
    files = rendered
    result = files.html.parent
    assert files.html == result / "report.html" and files.html.is_file()
    assert files.markdown.is_file() and files.verdicts.is_file()
    names = sorted(p.name for p in files.figures)
    assert names == sorted(
        f"{stem}.{fmt}"
        for stem in (
            "metrics-by-step-plain",
            "relinf-heatmap-cot-on-plain",
            "relinf-heatmap-plain-set-on-plain",
            "relinf-distribution-plain",
            "gradient-norms",
        )
        for fmt in ("png", "svg")
    )
    for path in files.figures:
        assert path.parent == result / "figures"
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC

    verdicts = json.loads(files.verdicts.read_text())
    assert verdicts["bootstrap"]["n_resamples"] == 500 and verdicts["bootstrap"]["seed"] == 0
    assert set(verdicts["rules"]) >= {"verdict", "trend", "overtake", "concentration"}
    by_name = {m["metric"]: m for m in verdicts["metrics"]}
    in_task = by_name["CoT <b>in</b> & task"]
    assert in_task["verdict"] == VERDICT_POSITIVE
    assert in_task["fraction_positive"] == 1.0
    assert in_task["trend"]["verdict"] == VERDICT_POSITIVE
    assert in_task["trend"]["slope_per_step"] == pytest.approx(0.004, abs=0.001)
    assert [s["step"] for s in in_task["steps"]] == list(STEPS)
    assert [(c["metric"], c["baseline"]) for c in verdicts["comparisons"]] == [
        ("CoT <b>in</b> & task", "Plain → In-task"),
        ("CoT → Cross-task", "Plain → Cross-task"),
    ]
    assert verdicts["comparisons"][0]["metric_above_from_step"] == 0
    norms = verdicts["diagnostics"]["gradient_norms"]
    assert {(n["step"], n["set"]) for n in norms} == {
        (s, name) for s in STEPS for name in ("plain", "cot", "plain set")
    }
    # ‖g‖ = sqrt(3 n): norms follow length exactly, so ρ = 1 within each set.
    assert all(n["rank_correlation"] == pytest.approx(1.0) for n in norms)
    assert verdicts["diagnostics"]["note"] is None


def test_statistics_match_a_direct_computation(result: Path):
    """The rebuilt matrices hold exactly the pairs of relinf.csv, aligned with tokens.jsonl."""
    tables = load_study_tables(result)
    pairs = build_metric_pairs(tables)
    assert [p.name for p in pairs] == [m[0] for m in METRICS]
    cross = pairs[1].matrices[2]
    assert cross.step == 100 and cross.used.sum() == 30 and not cross.used.diagonal().any()
    assert cross.relinf[0, 1] == _relinf("cot", 100, 0, 1)
    stats = compute_study_statistics(pairs, BootstrapSettings(n_resamples=200))
    assert stats.metrics[1].steps[2].estimate.value == pytest.approx(
        np.mean([_relinf("cot", 100, i, j) for i in range(6) for j in range(6) if i != j])
    )


def test_html_is_self_contained_and_escaped(rendered: ReportFiles):
    html = rendered.html.read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 5
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
    # Nothing to fetch: no remote URL, no script, no external stylesheet.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html
    assert "CoT &lt;b&gt;in&lt;/b&gt; &amp; task" in html and "<b>in</b>" not in html
    table = re.search(r'<table id="verdict-table">(.*?)</table>', html, re.S).group(1)
    assert table.count("<tr>") == 1 + len(METRICS)
    for needle in (
        "Question.",
        'id="comparison-table"',
        'id="step-table"',
        'id="set-table"',
        'id="checkpoint-table"',
        "swiftstudy study study.yaml --out made-up",  # the exact command
        "max_length: 2048",  # the config
        "Verdict rule:",
        "Spearman",
    ):
        assert needle in html, needle


def test_markdown_has_the_same_content_with_linked_figures(rendered: ReportFiles):
    md = rendered.markdown.read_text()
    result = rendered.markdown.parent
    assert "| Metric | Context | Verdict |" in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 5
    assert all((result / link).is_file() for link in links)
    assert "```yaml\n" in md and "swiftstudy study study.yaml --out made-up" in md
    assert "CoT <b>in</b> & task" in md


def test_rendering_again_gives_the_same_files(rendered: ReportFiles, tmp_path: Path):
    copy = write_result_folder(tmp_path / "made-up")
    again = render_report(copy, settings=BootstrapSettings(n_resamples=500))

    def text(path: Path) -> str:  # the re-render command names the folder
        return path.read_text().replace(str(path.parent), "DIR")

    assert again.verdicts.read_text() == rendered.verdicts.read_text()
    assert text(again.markdown) == text(rendered.markdown)
    assert text(again.html) == text(rendered.html)
    assert "--resamples 500 --seed 0" in again.html.read_text()


def test_old_result_folder_without_norms(tmp_path: Path):
    old = write_result_folder(tmp_path / "old", norms=False)
    files = render_report(old, settings=BootstrapSettings(n_resamples=200))
    verdicts = json.loads(files.verdicts.read_text())
    assert verdicts["diagnostics"]["gradient_norms"] is None
    assert "norms.csv is missing" in verdicts["diagnostics"]["note"]
    # Cosine (the default headline) needs the probes' norms: the headline falls back to RelInf.
    headline = verdicts["headline"]
    assert (headline["normalization"], headline["checkpoints"]) == ("relinf", "mean")
    assert "norms.csv is missing" in files.html.read_text()
    assert "norms.csv is missing" in files.markdown.read_text()
    assert not any("gradient-norms" in p.name for p in files.figures)
    assert len(re.findall(r"<img ", files.html.read_text())) == 4


def test_concentrated_metric_is_warned_about(tmp_path: Path):
    root = write_result_folder(tmp_path / "spiky")
    text = (root / "relinf.csv").read_text().splitlines()
    # One cross-task pair at step 100 becomes huge: it carries most of Σ|RelInf|.
    for k, line in enumerate(text):
        if line.startswith("100,") and ",cot,c0,add,plain,p1,cls," in line:
            text[k] = ",".join([*line.split(",")[:-1], "40.0"])
    (root / "relinf.csv").write_text("\n".join(text) + "\n")
    files = render_report(root, settings=BootstrapSettings(n_resamples=200))
    verdicts = json.loads(files.verdicts.read_text())
    step = verdicts["metrics"][1]["steps"][2]
    assert step["driven_by_few_pairs"] and step["top_pairs"] == 3  # ⌈10% of 30⌉
    assert "Driven by a few pairs" in files.html.read_text()
    assert "probe <code>c0</code> on eval <code>p1</code>" in files.html.read_text()


def test_cli_report(result: Path, capsys):
    argv = ["-q", "report", str(result), "--resamples", "100", "--seed", "3", "--level", "0.9"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and "verdicts.json" in out
    bootstrap = json.loads((result / "verdicts.json").read_text())["bootstrap"]
    assert (bootstrap["n_resamples"], bootstrap["seed"], bootstrap["level"]) == (100, 3, 0.9)
    html = (result / "report.html").read_text()
    assert "Mean over checkpoints [90% CI]" in html and "95% CI" not in html
    assert "--resamples 100 --seed 3 --level 0.9" in html


@pytest.mark.parametrize(
    ("option", "value"), [("--resamples", "0"), ("--level", "95"), ("--level", "0")]
)
def test_cli_report_bad_settings_exit_2(result: Path, capsys, option, value):
    assert main(["report", str(result), option, value]) == 2
    assert f"{option}: must be" in capsys.readouterr().err
    assert not (result / "report.html").exists()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: (d / "relinf.csv").unlink(), "missing relinf.csv"),
        (lambda d: (d / "config.yaml").unlink(), "missing config.yaml"),
        (
            lambda d: (d / "relinf.csv").write_text("step,probe_set\n0,cot\n"),
            "relinf.csv:1: missing column(s) probe_id",
        ),
        (
            lambda d: (d / "tokens.jsonl").write_text('{"set": "cot"}\n'),
            "tokens.jsonl:1: malformed record",
        ),
    ],
)
def test_cli_report_bad_folder_exits_2(result: Path, capsys, mutate, expected):
    mutate(result)
    assert main(["report", str(result)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("swiftstudy: error: ") and expected in err
    assert not (result / "report.html").exists()


def test_cli_report_missing_folder_exits_2(tmp_path: Path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no such result folder" in capsys.readouterr().err


def test_headline_verdicts_against_controls_and_every_variant(tmp_path: Path):
    root = write_result_folder(tmp_path / "controlled", controls=True, learning_rates=True)
    files = render_report(root, settings=BootstrapSettings(n_resamples=300))
    verdicts = json.loads(files.verdicts.read_text())
    headline = verdicts["headline"]
    assert (headline["normalization"], headline["checkpoints"]) == ("per-token", "lr")
    assert headline["validity"] == VALIDITY_NOTE and headline["notes"] == []
    assert [(v["metric"], v["control"], v["control_metric"]) for v in headline["verdicts"]] == [
        ("CoT <b>in</b> & task", "plain set", "Plain → In-task"),
        ("CoT → Cross-task", "plain set", "Plain → Cross-task"),
    ]
    # The raw RelInf beside each headline is the metric's mean over checkpoints.
    by_name = {m["metric"]: m for m in verdicts["metrics"]}
    for v in headline["verdicts"]:
        mean = by_name[v["metric"]]["mean_over_steps"]
        assert v["relinf_mean_over_checkpoints"]["value"] == mean["value"]

    variants = {(v["normalization"], v["checkpoints"]): v for v in verdicts["variants"]}
    assert set(variants) == {
        (n, w) for n in ("relinf", "cosine", "per-token") for w in ("mean", "last", "lr")
    }
    # The headline is the spec's variant; the relinf / mean margin is the comparison.
    chosen = variants["per-token", "lr"]["margins"]
    for v, margin in zip(headline["verdicts"], chosen, strict=True):
        assert v["margin"]["value"] == margin["value"] and v["verdict"] == margin["verdict"]
    comparison = verdicts["comparisons"][0]["mean_over_steps"]
    margin = variants["relinf", "mean"]["margins"][0]
    for key in ("value", "ci_low", "ci_high"):
        assert margin[key] == pytest.approx(comparison[key], abs=1e-12)
    assert (
        margin["verdict"] == "helps more than plain set"
    )  # CoT helps its own task, plain is noise

    # per-token: d·n_e/(n_p·‖e‖²) = RelInf·n_e/n_p here (‖e‖² = 2, d = 2·RelInf); lr: ∝ η.
    tokens = {}
    for record in map(json.loads, (root / "tokens.jsonl").read_text().splitlines()):
        tokens[record["set"], record["id"]] = sum(record["completion_mask"])
    values = []
    for step in STEPS:
        pairs = [
            _relinf("cot", step, i, j) * tokens["plain", f"p{j}"] / tokens["cot", f"c{i}"]
            for i in range(6)
            for j in range(6)
            if i != j
        ]
        values.append(np.mean(pairs))
    (cross,) = [m for m in variants["per-token", "last"]["metrics"] if m["metric"] == METRICS[1][0]]
    assert cross["value"] == pytest.approx(values[-1])
    (cross,) = [m for m in variants["per-token", "lr"]["metrics"] if m["metric"] == METRICS[1][0]]
    assert cross["value"] == pytest.approx(0.25 * values[0] + 0.75 * values[1])
    assert verdicts["learning_rates"] == {str(k): v for k, v in LEARNING_RATES.items()}

    for text in (files.markdown.read_text(), files.html.read_text()):
        assert "Verdicts against controls" in text
        assert headline["verdicts"][0]["verdict"] in text
        assert "likelihood of the reference responses" in text
        assert "Measured validity" in text


def test_report_without_controls_says_how_to_add_one(rendered: ReportFiles):
    verdicts = json.loads(rendered.verdicts.read_text())
    assert verdicts["headline"]["verdicts"] == []
    assert any("lr weighting is not computed" in n for n in verdicts["headline"]["notes"])
    assert {v["checkpoints"] for v in verdicts["variants"]} == {"mean", "last"}
    md = rendered.markdown.read_text()
    assert "No metric names a control" in md and VALIDITY_NOTE in md


@pytest.mark.parametrize("normalization", ["relinf", "cosine", "per-token"])
def test_a_pair_of_no_scored_example_is_refused(result: Path, normalization: str):
    text = (result / "relinf.csv").read_text().replace(",cot,c1,", ",cot,zz,", 1)
    (result / "relinf.csv").write_text(text)
    with pytest.raises(InputError, match=r"relinf\.csv: step 0: pair \('zz', 'p0'\) of no scored"):
        build_metric_pairs(load_study_tables(result), normalization)


def test_cosine_needs_norms(tmp_path: Path):
    tables = load_study_tables(write_result_folder(tmp_path / "old", norms=False))
    with pytest.raises(InputError, match=r"the cosine normalization needs norms\.csv"):
        build_metric_pairs(tables, "cosine")
    assert len(build_metric_pairs(tables, "per-token")) == len(METRICS)
