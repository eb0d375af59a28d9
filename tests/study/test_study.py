"""End to end on a tiny model: spec → files, values checked against the naive reference."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import build_tiny_llama, build_tiny_tokenizer
from swiftstudy.cli.main import main
from swiftstudy.data import load_examples, tokenize_examples
from swiftstudy.gradients import compute_naive_gradients
from swiftstudy.study import StudyWork, run_study

# Two float64 studies that reach their rows through other batches (a rerun that computes only what
# the cache lacks, other ranks, one thread a rank) or take dot products over other groupings of
# rows (rows read back from the cache) are not the same computation: other matmul shapes take
# other kernel paths and round in other last bits. The engine promises a gradient to 1e-12
# relative whatever its batch (test_batch_composition_does_not_change_gradients); the tables keep
# that (seen: at most 3e-15 on AMD EPYC). Rows, dot products and tables read back as they were
# written, or computed in the very batches again, are compared bit for bit (rel=0).
REL_ACROSS_BATCHES = 1e-12

NOCOT = [
    {"prompt": "What is two plus two?", "response": "4", "task": "add"},
    {"prompt": "Classify the review: great!", "response": "positive", "task": "cls"},
    {"prompt": "Fix the spelling: speling", "response": "spelling", "task": "fix"},
]
COT = [
    {
        "prompt": "What is two plus two? Please output the reason first.",
        "response": "Two and two make four. The answer is 4.",
        "task": "add",
    },
    {
        "prompt": "Classify the review: great! Please output the reason first.",
        "response": "Great is praise, so positive.",
        "task": "cls",
    },
    {
        "messages": [
            {"role": "user", "content": "Fix the spelling: speling"},
            {"role": "assistant", "content": "It lacks an l: spelling"},
        ],
        "task": "fix",
    },
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_study_dir(tmp_path: Path) -> Path:
    """A base model folder, two adapter checkpoints, two sets and a spec, under ``tmp_path``."""
    tokenizer = build_tiny_tokenizer()
    base = build_tiny_llama(len(tokenizer), seed=0)
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    config = LoraConfig(
        r=4, lora_alpha=32, target_modules=["up_proj", "down_proj"], init_lora_weights=False
    )
    for step, seed in ((20, 1), (10, 2)):
        model = build_tiny_llama(len(tokenizer), seed=0)
        torch.manual_seed(seed)  # after the base model, which seeds itself
        adapter = get_peft_model(model, config)
        adapter.save_pretrained(tmp_path / "run" / f"checkpoint-{step}")
    _write_jsonl(tmp_path / "nocot.jsonl", NOCOT)
    _write_jsonl(tmp_path / "cot.jsonl", COT)
    spec = {
        "model": "base",
        "checkpoints": "run",
        "sets": {"nocot": {"path": "nocot.jsonl"}, "cot": {"path": "cot.jsonl"}},
        "metrics": [
            {"name": "CoT → In-task", "probes": "cot", "evals": "nocot", "context": "in-task"},
            {
                "name": "CoT → Cross-task",
                "probes": "cot",
                "evals": "nocot",
                "context": "cross-task",
            },
        ],
        "dtype": "float64",
        "batch_size": 2,
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    return tmp_path


def edit_spec(root: Path, name: str, **changes) -> Path:
    """Write ``root/name``: ``root/study.yaml`` with top-level keys changed; return its path."""
    spec = yaml.safe_load((root / "study.yaml").read_text())
    spec.update(changes)
    (root / name).write_text(yaml.safe_dump(spec, allow_unicode=True))
    return root / name


def assert_same_tables(got: Path, expected: Path, *, rel: float) -> None:
    """The table files of two result folders agree: text exactly, numbers to ``rel``.

    ``rel=0``: every number bit for bit (floats are written with ``repr``). Otherwise numbers
    within ``rel``, or 1e-15 absolute for one that is near zero by cancellation.
    """
    assert (got / "tokens.jsonl").read_bytes() == (expected / "tokens.jsonl").read_bytes()
    for name in ("scores.csv", "relinf.csv", "norms.csv"):
        rows = list(csv.reader((got / name).open()))
        reference = list(csv.reader((expected / name).open()))
        assert len(rows) == len(reference) and rows[0] == reference[0], name
        for row, ref in zip(rows[1:], reference[1:], strict=True):
            if rel == 0:
                assert row == ref, name
                continue
            for value, ref_value in zip(row, ref, strict=True):
                if value == ref_value:
                    continue
                assert float(value) == pytest.approx(float(ref_value), rel=rel, abs=1e-15), name


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch) -> None:
    """Each test its own gradient cache: the user's is neither read nor filled."""
    monkeypatch.setenv("SWIFTSTUDY_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def study_dir(tmp_path: Path) -> Path:
    return build_study_dir(tmp_path)


def _reference_relinf(root: Path, step: int) -> torch.Tensor:
    """RelInf matrix (cot × nocot) from the naive loop on a freshly loaded checkpoint."""
    tokenizer = AutoTokenizer.from_pretrained(root / "base")
    model = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float64)
    model = PeftModel.from_pretrained(model, root / "run" / f"checkpoint-{step}").eval()
    modules = [
        m for n, m in model.named_modules() if n.endswith(("lora_A.default", "lora_B.default"))
    ]
    model.requires_grad_(False)

    def grads(name: str) -> torch.Tensor:
        toks = tokenize_examples(load_examples(root / f"{name}.jsonl"), tokenizer)
        return compute_naive_gradients(
            model, modules, [(t.input_ids, t.completion_mask) for t in toks]
        )

    probes, evals = grads("cot"), grads("nocot")
    return (probes @ evals.T) / (evals * evals).sum(dim=1), (probes * probes).sum(dim=1)


def test_study_writes_every_file_with_reference_values(study_dir: Path):
    out = study_dir / "out"
    result = run_study(study_dir / "study.yaml", out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "figures",
        "norms.csv",
        "relinf.csv",
        "report.html",
        "report.md",
        "scores.csv",
        "tokens.jsonl",
        "verdicts.json",
    ]
    assert [c.step for c in result.checkpoints] == [10, 20]

    scores = list(csv.DictReader((out / "scores.csv").open()))
    assert list(scores[0]) == [
        "metric",
        "context",
        "probes",
        "evals",
        "step",
        "checkpoint",
        "value",
        "n_pairs",
        "ci_low",
        "ci_high",
    ]
    assert [(r["step"], r["metric"], r["n_pairs"]) for r in scores] == [
        ("10", "CoT → In-task", "3"),
        ("10", "CoT → Cross-task", "6"),
        ("20", "CoT → In-task", "3"),
        ("20", "CoT → Cross-task", "6"),
    ]
    relinf = list(csv.DictReader((out / "relinf.csv").open()))
    assert len(relinf) == 2 * 9
    norms = list(csv.DictReader((out / "norms.csv").open()))
    assert list(norms[0]) == [
        "step",
        "checkpoint",
        "set",
        "id",
        "task",
        "n_completion_tokens",
        "sqnorm",
    ]
    assert len(norms) == 2 * 6  # steps × (3 nocot + 3 cot)
    tokens = {(t["set"], t["id"]): t for t in map(json.loads, (out / "tokens.jsonl").open())}
    for row in norms:
        mask = tokens[row["set"], row["id"]]["completion_mask"]
        assert int(row["n_completion_tokens"]) == sum(mask)
    for step in (10, 20):
        ref, probe_sqnorms = _reference_relinf(study_dir, step)
        for row in (r for r in norms if r["step"] == str(step)):
            if row["set"] == "cot":
                expected = probe_sqnorms[int(row["id"])].item()
            else:
                (expected,) = {
                    float(r["eval_sqnorm"])
                    for r in relinf
                    if r["step"] == str(step) and r["eval_id"] == row["id"]
                }
            assert float(row["sqnorm"]) == pytest.approx(expected, rel=1e-9)
        rows = [r for r in relinf if r["step"] == str(step)]
        for r in rows:
            i, j = int(r["probe_id"]), int(r["eval_id"])
            assert float(r["relinf"]) == pytest.approx(ref[i, j].item(), rel=1e-9, abs=1e-12)
        in_task, cross = (float(s["value"]) for s in scores if s["step"] == str(step))
        assert in_task == pytest.approx(ref.diagonal().mean().item(), rel=1e-9)
        off = ref[~torch.eye(3, dtype=torch.bool)]
        assert cross == pytest.approx(off.mean().item(), rel=1e-9)

    tokens = [json.loads(line) for line in (out / "tokens.jsonl").open()]
    assert {t["set"] for t in tokens} == {"cot", "nocot"} and len(tokens) == 6
    assert all(len(t["input_ids"]) == len(t["completion_mask"]) for t in tokens)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["spec"]["dtype"] == "float64"
    # The spec keeps device: auto (the default); what it resolved to is recorded beside it.
    assert config["spec"]["device"] == "auto"
    assert config["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert [c["step"] for c in config["checkpoints"]] == [10, 20]
    assert all(len(c["sha256"]) == 64 for c in config["checkpoints"])
    assert not (out / ".partial").exists()

    # The report recomputes each interval from relinf.csv and tokens.jsonl: the same numbers.
    verdicts = json.loads((out / "verdicts.json").read_text())
    from_report = {
        (str(s["step"]), m["metric"]): (s["ci_low"], s["ci_high"])
        for m in verdicts["metrics"]
        for s in m["steps"]
    }
    for row in scores:
        low, high = float(row["ci_low"]), float(row["ci_high"])
        assert low <= float(row["value"]) <= high
        assert from_report[row["step"], row["metric"]] == (low, high)
    assert [m["metric"] for m in verdicts["metrics"]] == ["CoT → In-task", "CoT → Cross-task"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "gradient-norms.png",
        "gradient-norms.svg",
        "metrics-by-step-nocot.png",
        "metrics-by-step-nocot.svg",
        "relinf-distribution-nocot.png",
        "relinf-distribution-nocot.svg",
        "relinf-heatmap-cot-on-nocot.png",
        "relinf-heatmap-cot-on-nocot.svg",
    ]
    assert 'id="verdict-table"' in (out / "report.html").read_text()


def test_rerun_with_other_config_is_refused_unless_overwrite(study_dir: Path, capsys):
    out = study_dir / "out"
    assert (
        main(["-q", "study", str(study_dir / "study.yaml"), "--out", str(out), "--no-progress"])
        == 0
    )
    before = (out / "scores.csv").read_text()
    # The same spec (device: auto) again on the same machine is the same run.
    assert (
        main(["-q", "study", str(study_dir / "study.yaml"), "--out", str(out), "--no-progress"])
        == 0
    )
    assert (out / "scores.csv").read_text() == before
    status = main(
        [
            "-q",
            "study",
            str(study_dir / "study.yaml"),
            "--out",
            str(out),
            "--no-progress",
            "batch_size=1",
            "dtype=float32",
        ]
    )
    assert status == 2
    assert "different study config" in capsys.readouterr().err
    assert (out / "scores.csv").read_text() == before
    assert (
        main(
            [
                "-q",
                "study",
                str(study_dir / "study.yaml"),
                "--out",
                str(out),
                "--no-progress",
                "dtype=float32",
                "--overwrite",
            ]
        )
        == 0
    )
    assert (out / "scores.csv").read_text() != before


def _count_engine_calls(monkeypatch, crash_at: int | None = None) -> list[int]:
    """Record the examples of each engine call; raise on call number ``crash_at`` (1-based)."""
    import swiftstudy.study.grams as grams_module

    real = grams_module.compute_gradients
    calls: list[int] = []

    def counted(model, modules, sequences, **kwargs):
        calls.append(len(sequences))
        if len(calls) == crash_at:
            raise RuntimeError("simulated crash")
        return real(model, modules, sequences, **kwargs)

    monkeypatch.setattr(grams_module, "compute_gradients", counted)
    return calls


@pytest.mark.parametrize("cache", [True, False])
def test_resume_after_a_crash_recomputes_only_what_was_lost(study_dir: Path, monkeypatch, cache):
    """Crashed in the second checkpoint: the first comes from .partial, the second's finished
    batch from the gradient cache (when on); the results equal an uninterrupted run's."""
    out = study_dir / "out"
    # 3 eval examples, then 3 probes, in batches of 2: 4 engine calls a checkpoint (2 + 1, then
    # 2 + 1); crash on the 6th: step 20's first batch of evals is done.
    _count_engine_calls(monkeypatch, crash_at=6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_study(study_dir / "study.yaml", out, cache=cache, progress=False)
    assert len(list((out / ".partial").glob("*.safetensors"))) == 1
    assert not (out / "scores.csv").exists()

    calls = _count_engine_calls(monkeypatch)
    resumed = run_study(study_dir / "study.yaml", out, cache=cache, progress=False)
    cached = 2 if cache else 0
    assert resumed.work == StudyWork(computed=6 - cached, cached=cached, resumed=1)
    assert sum(calls) == 6 - cached
    assert not (out / ".partial").exists()
    fresh = run_study(study_dir / "study.yaml", study_dir / "fresh", cache=False, progress=False)
    assert fresh.work == StudyWork(computed=12)
    # The same computation, so bit for bit: step 10 comes back from .partial and step 20's
    # finished batch from the cache as written, and the crash fell between batches, so the rest
    # is computed in the very batches an uninterrupted run uses, dot products over the same rows.
    assert resumed.scores == fresh.scores
    for name in ("scores.csv", "relinf.csv", "norms.csv", "tokens.jsonl"):
        assert (out / name).read_bytes() == (study_dir / "fresh" / name).read_bytes()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: (d / "cot.jsonl").write_text(
                '{"prompt": "x", "response": "y"}\n{"prompt": 3\n'
            ),
            "cot.jsonl:2",
        ),
        (
            lambda d: (d / "cot.jsonl").write_text('{"prompt": "x", "response": " "}\n'),
            "cot.jsonl:1: response",
        ),
        (lambda d: (d / "nocot.jsonl").unlink(), "nocot.jsonl"),
        (
            lambda d: (d / "study.yaml").write_text(
                (d / "study.yaml").read_text().replace("probes: cot", "probes: cots", 1)
            ),
            "study.yaml:",
        ),
        (
            lambda d: (d / "study.yaml").write_text(
                (d / "study.yaml").read_text().replace("checkpoints: run", "checkpoints: nowhere")
            ),
            "nowhere",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(study_dir, capsys, mutate, expected):
    mutate(study_dir)
    out = study_dir / "out"
    status = main(["study", str(study_dir / "study.yaml"), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("swiftstudy: error: ") and expected in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not out.exists()


def test_metric_without_pairs_names_spec_line(study_dir, capsys):
    rows = [dict(r, task="same") for r in NOCOT]
    _write_jsonl(study_dir / "nocot.jsonl", rows)
    _write_jsonl(study_dir / "cot.jsonl", [dict(r, task="same") for r in COT])
    out = study_dir / "out"
    assert main(["study", str(study_dir / "study.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "study.yaml:" in err and "metrics[1]" in err and "no pairs" in err
    assert not out.exists()


def test_checkpoint_that_does_not_fit_the_model(study_dir, capsys):
    wider = build_tiny_llama(len(build_tiny_tokenizer()))
    wider.config.intermediate_size = 64
    config = LoraConfig(r=2, target_modules=["up_proj"], init_lora_weights=False)
    get_peft_model(type(wider)(wider.config), config).save_pretrained(
        study_dir / "run" / "checkpoint-30"
    )
    out = study_dir / "out"
    assert main(["study", str(study_dir / "study.yaml"), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("swiftstudy: error: ") and "checkpoint-30" in err
    assert not out.exists()


def test_probes_are_streamed_against_the_kept_evals(study_dir: Path, monkeypatch):
    """No dot product ever sees all examples' gradients at once: the three evals are kept, each
    probe batch is multiplied with them and dropped."""
    import swiftstudy.study.grams as grams_module

    real, shapes = grams_module.compute_dot_products, []

    def recorded(left, right=None, **kwargs):
        shapes.append((left.shape[0], None if right is None else right.shape[0]))
        return real(left, right, **kwargs)

    monkeypatch.setattr(grams_module, "compute_dot_products", recorded)
    run_study(study_dir / "study.yaml", study_dir / "out", progress=False)
    # Per checkpoint: the evals' Gram block, then each probe batch (2 + 1) against the evals and
    # its own norms.
    streamed = [(3, None), (2, 3), (2, None), (1, 3), (1, None)] * 2
    assert shapes == streamed
    # Rows read back from the cache (their dot products deleted) are read a batch at a time too.
    for entry in (study_dir / "cache").rglob("dots"):
        shutil.rmtree(entry)
    shapes.clear()
    rerun = run_study(study_dir / "study.yaml", study_dir / "again", progress=False)
    assert rerun.work == StudyWork(cached=12) and shapes == streamed


PLAIN = [
    {"prompt": "What is one plus three?", "response": "4", "task": "add"},
    {"prompt": "Classify the review: awful.", "response": "negative", "task": "cls"},
    {"prompt": "Fix the spelling: teh", "response": "the", "task": "fix"},
]


def _write_learning_rates(root: Path) -> None:
    """trainer_state.json in each checkpoint: a learning rate logged at every step."""
    for step in (10, 20):
        history = [{"step": s, "loss": 1.0, "learning_rate": s * 1e-5} for s in range(1, step + 1)]
        state = {"global_step": step, "log_history": history}
        (root / "run" / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps(state))


def test_study_with_a_control_and_lr_weighted_verdicts(study_dir: Path):
    _write_jsonl(study_dir / "plain.jsonl", PLAIN)
    _write_learning_rates(study_dir)
    spec = yaml.safe_load((study_dir / "study.yaml").read_text())
    spec["metrics"][0]["control"] = "plain"
    spec["sets"]["plain"] = {"path": "plain.jsonl"}
    spec["verdict"] = {"normalization": "relinf", "checkpoints": "lr"}
    (study_dir / "controlled.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    out = study_dir / "out"
    run_study(study_dir / "controlled.yaml", out, progress=False)

    # The control's metric is added after the listed ones, in scores.csv as any other metric.
    scores = list(csv.DictReader((out / "scores.csv").open()))
    added = "plain → nocot (in-task, control)"
    assert [r["metric"] for r in scores if r["step"] == "10"] == [
        "CoT → In-task",
        "CoT → Cross-task",
        added,
    ]
    config = yaml.safe_load((out / "config.yaml").read_text())
    # η: the mean logged rate over (0, 10] and (10, 20].
    assert [c["learning_rate"] for c in config["checkpoints"]] == pytest.approx([5.5e-5, 15.5e-5])
    assert config["spec"]["metrics"][0]["control"] == "plain"

    verdicts = json.loads((out / "verdicts.json").read_text())
    (headline,) = verdicts["headline"]["verdicts"]
    assert (headline["metric"], headline["control"], headline["control_metric"]) == (
        "CoT → In-task",
        "plain",
        added,
    )
    assert headline["verdict"] in {f"{w} than plain" for w in ("helps more", "no better", "worse")}
    value = {(r["metric"], r["step"]): float(r["value"]) for r in scores}
    margins = [value["CoT → In-task", s] - value[added, s] for s in ("10", "20")]
    weights = [5.5 / 21, 15.5 / 21]
    assert headline["margin"]["value"] == pytest.approx(
        sum(w * m for w, m in zip(weights, margins, strict=True)), rel=1e-9
    )
    assert headline["relinf_mean_over_checkpoints"]["value"] == pytest.approx(
        (value["CoT → In-task", "10"] + value["CoT → In-task", "20"]) / 2, rel=1e-12
    )
    report = (out / "report.md").read_text()
    assert "Verdicts against controls" in report and headline["verdict"] in report

    # Another verdict variant is a report setting: the same folder takes the rerun.
    assert main(
        ["-q", "study", str(study_dir / "controlled.yaml"), "--out", str(out), "--no-progress",
         "verdict.checkpoints=last"]
    ) == 0  # fmt: skip
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert verdicts["headline"]["checkpoints"] == "last"


def test_lr_verdict_without_trainer_state_names_the_key(study_dir: Path, capsys):
    out = study_dir / "out"
    argv = ["study", str(study_dir / "study.yaml"), "--out", str(out), "--no-progress"]
    assert main([*argv, "verdict.checkpoints=lr"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "verdict.checkpoints" in err and "trainer_state.json" in err
    assert not out.exists()
