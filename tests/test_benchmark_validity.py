"""The validity benchmark: its data obey the rules it states, its agreement counts are right, and
its --quick size runs every stage on the bundled model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import validity
import validity_data

from swiftstudy.scores import PairMatrix


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_no_eval_query_is_trained_on_or_probed(tmp_path: Path):
    data = validity_data.write_validity_data(tmp_path, validity_data.DataSize(6, 2, 2, 5, 2, 3))
    evals = {r["prompt"] for r in _records(data.eval)}
    assert len(evals) == 6 * len(validity_data.EVAL_FAMILIES)
    seen = set(evals)
    for path in [data.study_evals, data.base, *data.train.values(), *data.probes.values()]:
        prompts = {r["prompt"] for r in _records(path)}
        # The derived strategies wrap the query (cot appends, eval and clarify embed it).
        assert not any(q in p for q in evals for p in prompts), path
        seen |= prompts
    for strategy in ("off_by", "random"):
        for record in _records(data.train[strategy]):
            family = validity_data.ALL_FAMILIES[record["task"]]
            assert not family.check(record["facts"], record["response"])
            if strategy == "off_by":
                right = next(n for n in range(-10, 300) if family.check(record["facts"], str(n)))
                assert 1 <= abs(int(record["response"]) - right) <= 3
    for record in _records(data.eval) + _records(data.train["similar"]):
        assert validity_data.ALL_FAMILIES[record["task"]].check(record["facts"], record["response"])


def test_agreement_counts_ranks_and_signs_by_hand():
    strategies = validity_data.STRATEGIES  # similar cot eval clarify off_by random unrelated
    score = dict(zip(strategies, [0.5, -0.3, 0.1, -0.1, 0.3, 0.2, 0.05], strict=True))
    gains = dict(zip(strategies, [30.0, -5.0, 4.0, -2.0, 10.0, -8.0, 1.0], strict=True))
    changes = {
        s: {"delta_accuracy": g, "delta_nll": -g / 10, "delta_lenient": g} for s, g in gains.items()
    }
    agreement = validity.compute_variant_agreement({"relinf/mean": score}, changes)["relinf/mean"]
    # Signs agree for all but random (+0.2 vs −8).
    assert agreement["sign_accuracy"] == 6
    # Margins over unrelated (0.05) against gains over its run (1.0): eval +0.05 vs +3 agrees,
    # random +0.15 vs −9 does not, clarify −0.15 vs −3 agrees: 5 of 6.
    assert agreement["controls"]["unrelated"] == {"accuracy": 5, "nll": 5, "n": 6}
    # Margins over similar (0.5, the best score and the best gain, +30) are all negative, and so
    # is every gain over its run: 6 of 6; a variant that scores similar lowest gets none right.
    assert agreement["controls"]["similar"] == {"accuracy": 6, "nll": 6, "n": 6}
    flipped = {s: -v for s, v in score.items()}
    reversed_ = validity.compute_variant_agreement({"v": flipped}, changes)["v"]
    assert reversed_["controls"]["similar"] == {"accuracy": 0, "nll": 0, "n": 6}
    # Ranks: scores 7,1,4,2,6,5,3 against gains 7,2,5,3,6,1,4: Σd² = 0+1+1+1+0+16+1 = 20,
    # ρ = 1 − 6·20 / (7·48) = 0.642857...
    assert agreement["spearman_delta_accuracy"] == pytest.approx(1 - 120 / 336)
    assert agreement["spearman_neg_delta_nll"] == pytest.approx(1 - 120 / 336)


def test_in_minus_cross_is_the_in_task_mean_minus_the_cross_task_mean():
    # Two probes (tasks a, b) × three evals (a, a, b); the pair (b, a) at column 1 is not used.
    matrix = PairMatrix(
        10,
        np.array([[0.6, 0.2, -0.3], [0.1, 7.0, 0.9]]),
        np.array([[True, True, True], [True, False, True]]),
    )
    same_task = np.array([[True, True, False], [False, False, True]])
    # In-task pairs 0.6, 0.2, 0.9: mean 17/30; cross-task −0.3, 0.1 (7.0 unused): mean −0.1.
    (value,) = validity._per_step([matrix], same_task, validity.IN_MINUS_CROSS)
    assert value == pytest.approx(17 / 30 + 0.1, rel=1e-12)
    (in_task,) = validity._per_step([matrix], same_task, "in-task")
    assert in_task == pytest.approx(17 / 30, rel=1e-12)
    (everything,) = validity._per_step([matrix], same_task, "all")
    assert everything == pytest.approx(1.5 / 5, rel=1e-12)


def test_variants_rank_by_their_worst_set_up():
    def setup(rhos: dict[str, tuple[float | None, float]]) -> dict:
        return {
            "agreement": {
                v: {"spearman_neg_delta_nll": n, "spearman_delta_accuracy": a}
                for v, (n, a) in rhos.items()
            }
        }

    results = {
        "setups": {
            "r64": setup({"a": (0.9, 0.1), "b": (0.5, 0.9), "c": (None, 1.0), "d": (0.6, 0.2)}),
            "r16": setup({"a": (0.3, 0.8), "b": (0.6, 0.7), "c": (1.0, 1.0), "d": (0.5, 0.3)}),
        }
    }
    # Worst over set-ups: a 0.3, b 0.5, c none, d 0.5 (then by accuracy: d 0.2 < b 0.7).
    ranked = validity.rank_variants(results)
    assert [v for v, _, _ in ranked] == ["b", "d", "a", "c"]
    assert ranked[0] == ("b", 0.5, 0.7)


@pytest.mark.slow
@pytest.mark.integration
def test_quick_run_fills_every_table(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("SWIFTSTUDY_CACHE", str(tmp_path / "swiftstudy-cache"))
    assert validity.main(["--quick", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    table = capsys.readouterr().out
    for setup in validity.SETUPS.values():
        assert f"LoRA r={setup.r}, alpha={setup.alpha}" in table
        result = json.loads((tmp_path / "out" / setup.name / "result.json").read_text())
        assert set(result["changes"]) == {*validity_data.STRATEGIES, "base"}
        assert result["retrain_runs"] == len(validity_data.STRATEGIES)
        # 4 contexts (all, in-task, cross-task, in-minus-cross) × 3 normalisations × 3 weightings
        assert len(result["agreement"]) == 36
        # A two-step retraining moves every strategy's reference NLL.
        assert all(result["changes"][s]["delta_nll"] != 0 for s in validity_data.STRATEGIES)
    assert (tmp_path / "out" / "validity.md").read_text() + "\n" == table
