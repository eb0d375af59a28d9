"""The gradient cache: reuse across studies, exact invalidation, location, size limit, damage."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from conftest import build_tiny_llama, build_tiny_tokenizer
from swiftstudy.cli.main import main
from swiftstudy.study import StudyWork, run_study
from swiftstudy.study.cache import GradientCache, GradientSettings, example_digest
from test_study import COT, REL_ACROSS_BATCHES, assert_same_tables, build_study_dir, edit_spec

EXTRA = [
    {"prompt": "Spell the number 7.", "response": "seven", "task": "add"},
    {"prompt": "Is 'awful' positive?", "response": "No, negative.", "task": "cls"},
]
N_EXAMPLES, N_CHECKPOINTS = 6, 2  # the study of build_study_dir: 3 cot + 3 nocot, steps 10, 20


@pytest.fixture()
def study_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SWIFTSTUDY_CACHE", str(tmp_path / "cache"))
    return build_study_dir(tmp_path)


def _engine_examples(monkeypatch) -> list[int]:
    """How many examples each engine call gets, recorded as the study runs."""
    import swiftstudy.study.grams as grams_module

    real = grams_module.compute_gradients
    calls: list[int] = []

    def counted(model, modules, sequences, **kwargs):
        calls.append(len(sequences))
        return real(model, modules, sequences, **kwargs)

    monkeypatch.setattr(grams_module, "compute_gradients", counted)
    return calls


def _cache_rows(cache: Path) -> list[Path]:
    """The gradient rows in the cache (not the dot products stored beside them)."""
    return sorted(p for p in cache.rglob("*.safetensors") if "dots" not in p.parts)


def _dot_entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*.safetensors") if "dots" in p.parts)


def _values(result) -> list[float]:
    return [r.relinf for r in result.relinf] + [r.value for r in result.scores]


def test_a_new_probe_set_computes_only_the_new_examples(study_dir: Path, monkeypatch):
    first = run_study(study_dir / "study.yaml", study_dir / "first", progress=False)
    assert first.work == StudyWork(computed=N_EXAMPLES * N_CHECKPOINTS)
    assert len(_cache_rows(study_dir / "cache")) == N_EXAMPLES * N_CHECKPOINTS

    (study_dir / "extra.jsonl").write_text("".join(json.dumps(r) + "\n" for r in EXTRA))
    spec = yaml.safe_load((study_dir / "study.yaml").read_text())
    spec["sets"]["extra"] = {"path": "extra.jsonl"}
    spec["metrics"].append(
        {"name": "Extra → In-task", "probes": "extra", "evals": "nocot", "context": "in-task"}
    )
    (study_dir / "more.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    calls = _engine_examples(monkeypatch)
    second = run_study(study_dir / "more.yaml", study_dir / "second", progress=False)
    assert sum(calls) == len(EXTRA) * N_CHECKPOINTS
    assert second.work == StudyWork(
        computed=len(EXTRA) * N_CHECKPOINTS, cached=N_EXAMPLES * N_CHECKPOINTS
    )
    assert len(_cache_rows(study_dir / "cache")) == (N_EXAMPLES + len(EXTRA)) * N_CHECKPOINTS

    fresh = run_study(study_dir / "more.yaml", study_dir / "fresh", cache=False, progress=False)
    assert fresh.work == StudyWork(computed=(N_EXAMPLES + len(EXTRA)) * N_CHECKPOINTS)
    # fresh batches the new examples with the others, second alone: other batches.
    rel = REL_ACROSS_BATCHES
    assert _values(second) == pytest.approx(_values(fresh), rel=rel, abs=1e-15)
    old = [r.relinf for r in second.relinf if r.probe_set == "cot"]
    assert old == pytest.approx([r.relinf for r in first.relinf], rel=rel, abs=1e-15)


def test_changes_that_change_a_gradient_invalidate_exactly_those_entries(
    study_dir: Path, monkeypatch
):
    run_study(study_dir / "study.yaml", study_dir / "first", progress=False)
    calls = _engine_examples(monkeypatch)

    def rerun(spec: Path, out: str) -> StudyWork:
        calls.clear()
        work = run_study(spec, study_dir / out, progress=False).work
        assert sum(calls) == work.computed
        return work

    # Settings that only move the cache or batch differently: nothing recomputed.
    spec = edit_spec(study_dir, "batches.yaml", batch_size=1, cache_max_gradient_mb=1)
    assert rerun(spec, "batches") == StudyWork(cached=12)
    # Another dtype: every gradient.
    assert rerun(edit_spec(study_dir, "f32.yaml", dtype="float32"), "f32") == StudyWork(computed=12)
    # One example's tokens: that example at both checkpoints.
    (study_dir / "cot.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [{**COT[0], "response": "Four."}, *COT[1:]])
    )
    assert rerun(study_dir / "study.yaml", "tokens") == StudyWork(computed=2, cached=10)
    # One checkpoint's weights: its examples only.
    config = LoraConfig(
        r=4, lora_alpha=32, target_modules=["up_proj", "down_proj"], init_lora_weights=False
    )
    model = build_tiny_llama(len(build_tiny_tokenizer()), seed=0)
    torch.manual_seed(7)
    get_peft_model(model, config).save_pretrained(study_dir / "run" / "checkpoint-20")
    assert rerun(study_dir / "study.yaml", "weights") == StudyWork(computed=6, cached=6)


def test_gradient_settings_key_every_field():
    base = GradientSettings("m", "float32", "adapter", (), "e")
    variants = [
        GradientSettings("m2", "float32", "adapter", (), "e"),
        GradientSettings("m", "float64", "adapter", (), "e"),
        GradientSettings("m", "float32", "full", (), "e"),
        GradientSettings("m", "float32", "adapter", ("x",), "e"),
        GradientSettings("m", "float32", "adapter", (), "e2"),
        GradientSettings("m", "float32", "adapter", (), "e", projection=(16, 0)),
        GradientSettings("m", "float32", "adapter", (), "e", projection=(16, 1)),
        GradientSettings("m", "float32", "adapter", (), "e", projection=(32, 0)),
        GradientSettings("m", "float32", "adapter", (), "e", preconditioner="adam"),
    ]
    assert len({base.digest, *(v.digest for v in variants)}) == 1 + len(variants)
    assert example_digest(([1, 2, 3], [0, 1, 1])) != example_digest(([1, 2, 3], [0, 0, 1]))
    assert example_digest(([1, 2, 3], [0, 1, 1])) == example_digest(((1, 2, 3), (False, 1, 1)))


def test_cache_location_spec_then_environment_then_user_folder(study_dir: Path, monkeypatch):
    spec = edit_spec(study_dir, "located.yaml", cache_dir="from-spec")
    run_study(spec, study_dir / "a", progress=False)
    assert len(_cache_rows(study_dir / "from-spec")) == 12
    assert not (study_dir / "cache").exists()

    run_study(study_dir / "study.yaml", study_dir / "b", progress=False)
    assert len(_cache_rows(study_dir / "cache" / "gradients")) == 12
    # Where the cache lives does not make another study: the same --out is not refused.
    assert run_study(study_dir / "study.yaml", study_dir / "a", progress=False).work == StudyWork(
        cached=12
    )

    monkeypatch.delenv("SWIFTSTUDY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(study_dir / "xdg"))
    run_study(study_dir / "study.yaml", study_dir / "c", progress=False)
    assert len(_cache_rows(study_dir / "xdg" / "swiftstudy" / "gradients")) == 12


def test_no_cache_neither_reads_nor_writes(study_dir: Path, monkeypatch, capsys):
    run_study(study_dir / "study.yaml", study_dir / "first", progress=False)
    before = _cache_rows(study_dir / "cache")
    command = ["-q", "study", str(study_dir / "study.yaml"), "--no-progress", "--no-cache"]
    assert main([*command, "--out", str(study_dir / "again")]) == 0
    assert "gradients: 12 computed, 0 from the cache, 0 checkpoint(s) resumed" in (
        capsys.readouterr().out
    )
    assert _cache_rows(study_dir / "cache") == before
    monkeypatch.setenv("SWIFTSTUDY_CACHE", str(study_dir / "empty"))
    assert main([*command, "--out", str(study_dir / "third")]) == 0
    assert not (study_dir / "empty").exists()


def test_rows_over_the_size_limit_keep_their_dot_products(study_dir: Path, caplog, monkeypatch):
    spec = edit_spec(study_dir, "small.yaml", cache_max_gradient_mb=0)
    run_study(spec, study_dir / "first", progress=False)
    assert "exceed cache_max_gradient_mb" in caplog.text
    assert _cache_rows(study_dir / "cache") == []
    # Each row's dot products with the 3 evals and its squared norm were kept instead.
    assert len(_dot_entries(study_dir / "cache")) == N_EXAMPLES * N_CHECKPOINTS
    calls = _engine_examples(monkeypatch)
    again = run_study(spec, study_dir / "again", progress=False)
    assert again.work == StudyWork(cached=12) and calls == []
    assert_same_tables(study_dir / "again", study_dir / "first", rel=0)  # as cached: bit for bit
    # The gradient dimension is recorded though no gradient was read.
    dims = [
        [
            c["gradient_dim"]
            for c in yaml.safe_load((study_dir / out / "config.yaml").read_text())["checkpoints"]
        ]
        for out in ("first", "again")
    ]
    assert dims[0] == dims[1] == [1280, 1280]
    # A new probe set over the same evals: the evals (no rows kept) and the new probes only.
    (study_dir / "extra.jsonl").write_text("".join(json.dumps(r) + "\n" for r in EXTRA))
    more = yaml.safe_load(spec.read_text())
    more["sets"]["extra"] = {"path": "extra.jsonl"}
    more["metrics"].append(
        {"name": "Extra → In-task", "probes": "extra", "evals": "nocot", "context": "in-task"}
    )
    (study_dir / "more.yaml").write_text(yaml.safe_dump(more, allow_unicode=True))
    second = run_study(study_dir / "more.yaml", study_dir / "second", progress=False)
    assert second.work == StudyWork(computed=(3 + len(EXTRA)) * 2, cached=3 * 2)
    fresh = run_study(study_dir / "more.yaml", study_dir / "fresh", cache=False, progress=False)
    # second batches the evals with the new probes only, fresh with every probe: other batches.
    assert _values(second) == pytest.approx(_values(fresh), rel=REL_ACROSS_BATCHES, abs=1e-15)


def test_a_damaged_entry_is_recomputed_and_replaced(study_dir: Path, caplog):
    run_study(study_dir / "study.yaml", study_dir / "first", progress=False)
    # A damaged dot-product entry: the row is read instead, and the entry written anew.
    entry = _dot_entries(study_dir / "cache")[0]
    entry.write_bytes(b"\0" * 10)
    assert run_study(study_dir / "study.yaml", study_dir / "dots", progress=False).work == (
        StudyWork(cached=12)
    )
    assert "unreadable cache entry" in caplog.text
    assert load_file(entry)["dots"].dtype == torch.float64
    # The damaged row's dot products are taken again from rows read back, grouped otherwise.
    assert_same_tables(study_dir / "dots", study_dir / "first", rel=REL_ACROSS_BATCHES)
    # Damaged rows (without dot products, so they must be read): recomputed and replaced.
    for path in _dot_entries(study_dir / "cache"):
        path.unlink()
    rows = _cache_rows(study_dir / "cache")
    good = load_file(rows[0])["gradient"].clone()  # not a view of the file
    rows[0].write_bytes(rows[0].read_bytes()[:100])  # as after a crash of the whole machine
    rows[1].write_bytes(b"\0" * 64)
    again = run_study(study_dir / "study.yaml", study_dir / "again", progress=False)
    assert again.work == StudyWork(computed=2, cached=10)
    assert "unreadable cache entry" in caplog.text
    assert torch.equal(load_file(rows[0])["gradient"], good)


def test_entry_of_another_key_is_not_used(tmp_path: Path, caplog):
    settings = GradientSettings("m", "float32", "adapter", (), "e")
    cache = GradientCache(tmp_path, settings, max_row_bytes=1 << 20)
    sequence, other = ([1, 2, 3], [0, 1, 1]), ([4, 5], [0, 1])
    cache.save("c" * 64, [(sequence, torch.arange(4.0))])
    assert torch.equal(cache.load("c" * 64, sequence), torch.arange(4.0))
    assert cache.load("d" * 64, sequence) is None
    # A file moved under another example's name (or a digest-prefix clash) is refused.
    wrong = cache.path("c" * 64, example_digest(other))
    wrong.parent.mkdir(parents=True)
    cache.path("c" * 64, example_digest(sequence)).rename(wrong)
    assert cache.load("c" * 64, other) is None
    assert "belongs to another key" in caplog.text
    assert json.loads((cache.folder / "settings.json").read_text())["dtype"] == "float32"
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_two_studies_sharing_a_cache_at_once(study_dir: Path):
    """Two processes fill one cache at the same time: both results and every entry are right."""
    command = [sys.executable, "-m", "swiftstudy", "-q", "study", "--no-progress"]
    spec = edit_spec(study_dir, "one.yaml", batch_size=1)
    runs = [
        subprocess.Popen(
            [*command, str(path), "--out", str(study_dir / out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path, out in ((study_dir / "study.yaml", "a"), (spec, "b"))
    ]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-2000:]
    fresh = run_study(study_dir / "study.yaml", study_dir / "fresh", cache=False, progress=False)
    # b batches one example at a time, and each run reads rows the other computed: other batches.
    rel = REL_ACROSS_BATCHES
    for out in ("a", "b"):
        rows = (study_dir / out / "relinf.csv").read_text().splitlines()[1:]
        relinf = [float(line.rsplit(",", 1)[1]) for line in rows]
        assert relinf == pytest.approx([r.relinf for r in fresh.relinf], rel=rel, abs=1e-15)
    entries = _cache_rows(study_dir / "cache")
    assert len(entries) == 12 and not list((study_dir / "cache").rglob("*.tmp"))
    again = run_study(study_dir / "study.yaml", study_dir / "again", progress=False)
    assert again.work == StudyWork(cached=12)
    assert _values(again) == pytest.approx(_values(fresh), rel=rel, abs=1e-15)


def test_a_cache_folder_that_cannot_be_written_is_refused_or_skipped(study_dir, capsys, caplog):
    (study_dir / "a-file").write_text("not a folder")
    command = ["study", str(study_dir / "study.yaml"), "--no-progress"]
    assert main([*command, "--out", str(study_dir / "out"), "cache_dir=a-file"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "study.yaml" in err and "cache_dir" in err and "--no-cache" in err
    assert not (study_dir / "out").exists()
    # Unwritable once the study runs (here: the gradients folder is a file): logged, not fatal.
    (study_dir / "blocked").mkdir()
    (study_dir / "blocked" / "gradients").write_text("")
    spec = edit_spec(study_dir, "blocked.yaml", cache_dir="blocked")
    result = run_study(spec, study_dir / "blocked-out", progress=False)
    assert result.work == StudyWork(computed=12)
    assert "cannot write the gradient cache" in caplog.text
    assert (study_dir / "blocked-out" / "scores.csv").is_file()


def test_the_cache_is_cut_to_its_budget_least_recently_used_first(study_dir: Path, caplog):
    caplog.set_level(logging.INFO, logger="swiftstudy.study.run")
    run_study(study_dir / "study.yaml", study_dir / "first", progress=False)
    row_bytes = _cache_rows(study_dir / "cache")[0].stat().st_size
    # A study of the nocot evals (read: used again) and a new probe set, in a 10-row budget.
    (study_dir / "extra.jsonl").write_text("".join(json.dumps(r) + "\n" for r in EXTRA))
    spec = yaml.safe_load((study_dir / "study.yaml").read_text())
    spec["sets"] = {"extra": {"path": "extra.jsonl"}, "nocot": {"path": "nocot.jsonl"}}
    spec["metrics"] = [{"name": "E", "probes": "extra", "evals": "nocot", "context": "in-task"}]
    spec["cache_max_gb"] = 10.5 * row_bytes / 2**30
    (study_dir / "budget.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    second = run_study(study_dir / "budget.yaml", study_dir / "second", progress=False)
    assert second.work == StudyWork(computed=4, cached=6)
    assert "least recently used" in caplog.text
    assert len(_cache_rows(study_dir / "cache")) == 10  # the cot rows, used longest ago, went
    assert run_study(study_dir / "budget.yaml", study_dir / "third", progress=False).work == (
        StudyWork(cached=10)
    )
    # The cot rows are gone; the dot products of those written last survived the cut (each a few
    # bytes beside a row): exactly the cot examples without one are computed again.
    cot_dots = len(_dot_entries(study_dir / "cache")) - (3 + len(EXTRA)) * N_CHECKPOINTS
    assert 0 <= cot_dots < 3 * N_CHECKPOINTS
    again = run_study(study_dir / "study.yaml", study_dir / "again", progress=False)
    assert again.work == StudyWork(computed=6 - cot_dots, cached=6 + cot_dots)
