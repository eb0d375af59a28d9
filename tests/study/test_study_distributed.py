"""``torchrun --nproc-per-node 2 -m swiftstudy study``: gloo on CPU, the single-process tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from swiftstudy.study import StudyWork, run_study
from test_study import REL_ACROSS_BATCHES, assert_same_tables, build_study_dir


def _torchrun(spec: Path, out: Path, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["-m", "swiftstudy", "study", str(spec), "--out", str(out), "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_two_processes_write_the_single_process_tables(tmp_path: Path, monkeypatch):
    root = build_study_dir(tmp_path)
    env = {**os.environ, "SWIFTSTUDY_CACHE": str(tmp_path / "cache")}
    run_study(root / "study.yaml", root / "single", cache=False, progress=False)
    # A single process that crashed after step 10 (cache off): the ranks resume from .partial.
    import swiftstudy.study.grams as grams_module

    real, calls = grams_module.compute_gradients, []

    def crash_at_step_20(*args, **kwargs):  # 4 batches a checkpoint: evals 2 + 1, probes 2 + 1
        calls.append(1)
        if len(calls) > 4:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(grams_module, "compute_gradients", crash_at_step_20)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_study(root / "study.yaml", root / "ddp", cache=False, progress=False)
    # 3 evals, then 3 probes, in batches of 2: each rank computes one batch of each.
    done = _torchrun(root / "study.yaml", root / "ddp", env)
    assert done.stdout.count("gradients: 6 computed, 0 from the cache, 1 checkpoint(s)") == 1
    assert "step 10: rank" not in done.stderr
    for rank in (0, 1):
        for what in ("kept", "streamed"):
            assert f"step 20: rank {rank} computes 1 of 2 batch(es) of {what} rows" in done.stderr
    assert sorted(p.name for p in (root / "ddp").iterdir()) == sorted(
        p.name for p in (root / "single").iterdir()
    )
    # Each rank runs one thread (torchrun's default) and torch splits its reductions by thread:
    # not the single process's computation, though the batches are the same.
    assert_same_tables(root / "ddp", root / "single", rel=REL_ACROSS_BATCHES)
    files = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(files) == 2 * 6  # step 20's rows, and their dot products with the 3 evals

    # A new set of one example: one batch a checkpoint, so rank 1 has nothing to compute.
    (root / "one.jsonl").write_text(
        json.dumps({"prompt": "Spell 7.", "response": "seven", "task": "add"}) + "\n"
    )
    spec = yaml.safe_load((root / "study.yaml").read_text())
    spec["sets"]["one"] = {"path": "one.jsonl"}
    spec["metrics"].append({"name": "One", "probes": "one", "evals": "nocot", "context": "in-task"})
    (root / "more.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    done = _torchrun(root / "more.yaml", root / "ddp-more", env)
    assert "gradients: 8 computed, 6 from the cache" in done.stdout  # step 10 anew, 1 at 20
    assert "step 20: rank 1 computes 0 of 1 batch(es) of streamed rows" in done.stderr
    more = run_study(root / "more.yaml", root / "single-more", cache=False, progress=False)
    assert more.work == StudyWork(computed=14)
    assert_same_tables(root / "ddp-more", root / "single-more", rel=REL_ACROSS_BATCHES)


@pytest.mark.slow
def test_accelerate_launch_reads_the_same_environment(tmp_path: Path):
    root = build_study_dir(tmp_path)
    env = {**os.environ, "SWIFTSTUDY_CACHE": str(tmp_path / "cache")}
    run_study(root / "study.yaml", root / "single", cache=False, progress=False)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "-m", "swiftstudy", "study", str(root / "study.yaml")]
    done = subprocess.run(
        [*command, "--out", str(root / "accelerate"), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 10: rank 1 computes 1 of 2 batch(es) of kept rows" in done.stderr
    assert_same_tables(root / "accelerate", root / "single", rel=REL_ACROSS_BATCHES)
