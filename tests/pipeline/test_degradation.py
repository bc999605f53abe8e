"""The degradation test: the champion's fresh score against its own test score (mlpipeline.degradation)."""

from __future__ import annotations

import numpy as np
import pytest

from mlpipeline.degradation import degradation, words

CLASSES = ["a", "b", "c"]


def _labels(rng, rows: int, error_rate: float):
    true = rng.choice(CLASSES, size=rows)
    wrong = rng.random(rows) < error_rate
    shifted = np.array([CLASSES[(CLASSES.index(t) + 1) % 3] for t in true])
    return true, np.where(wrong, shifted, true)


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "macro_f1"])
def test_same_error_rate_is_not_degraded_and_a_higher_one_is(metric):
    rng = np.random.default_rng(7)
    ref_true, ref_pred = _labels(rng, 800, 0.10)
    same_true, same_pred = _labels(rng, 3000, 0.10)
    worse_true, worse_pred = _labels(rng, 3000, 0.16)
    kwargs = {"metric": metric, "classes": CLASSES, "alpha": 0.001, "rounds": 1000}
    same = degradation(ref_true, ref_pred, same_true, same_pred, **kwargs)
    worse = degradation(ref_true, ref_pred, worse_true, worse_pred, **kwargs)
    assert same["status"] == "measured" and not same["degraded"] and same["pvalue"] > 0.001
    assert worse["degraded"] and worse["z"] < -3 and worse["fresh_score"] < worse["reference_score"]
    assert "significantly worse than the champion's earlier" in words(worse)


def test_a_better_fresh_score_is_never_degraded():
    rng = np.random.default_rng(3)
    ref_true, ref_pred = _labels(rng, 800, 0.2)
    fresh_true, fresh_pred = _labels(rng, 3000, 0.05)
    result = degradation(ref_true, ref_pred, fresh_true, fresh_pred, metric="accuracy", classes=CLASSES, alpha=0.05,
                         rounds=500)
    assert not result["degraded"] and result["z"] > 0 and result["pvalue"] > 0.5


def test_false_alarms_stay_near_alpha_on_batches_of_the_test_distribution():
    """Under no change the test fires about alpha of the time (here alpha 0.05 over 400 batches)."""
    rng = np.random.default_rng(11)
    fired = sum(degradation(*_labels(rng, 1000, 0.12), *_labels(rng, 2000, 0.12), metric="accuracy", classes=CLASSES,
                            alpha=0.05, rounds=300, seed=i)["degraded"] for i in range(400))
    assert 4 <= fired <= 40, fired


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2", "mape"])
def test_regression_losses(metric):
    rng = np.random.default_rng(5)
    ref_true = rng.normal(10, 2, 600)
    ref_pred = ref_true + rng.normal(0, 1, 600)
    fresh_true = rng.normal(10, 2, 3000)
    same = degradation(ref_true, ref_pred, fresh_true, fresh_true + rng.normal(0, 1, 3000), metric=metric,
                       classes=[], alpha=0.001, rounds=0)
    worse = degradation(ref_true, ref_pred, fresh_true, fresh_true + rng.normal(0.5, 1.3, 3000), metric=metric,
                        classes=[], alpha=0.001, rounds=0)
    assert not same["degraded"] and worse["degraded"], (same, worse)
    assert worse["fresh_score"] > worse["reference_score"]  # a loss: lower is better


def test_mape_on_a_zero_target_and_too_few_rows_are_unavailable_not_errors():
    zero = degradation([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 1.0, 2.0], [0.5, 1.0, 2.0], metric="mape", classes=[],
                       alpha=0.01, rounds=0)
    assert zero["status"] == "unavailable" and "MAPE is undefined" in zero["reason"] and not zero["degraded"]
    few = degradation(["a"], ["a"], ["a", "b"], ["a", "a"], metric="accuracy", classes=CLASSES, alpha=0.01, rounds=10)
    assert few["status"] == "unavailable" and "too few rows" in words(few)


def test_a_perfect_champion_that_stays_perfect_is_not_degraded():
    true = np.array(CLASSES * 50)
    result = degradation(true, true, true, true, metric="accuracy", classes=CLASSES, alpha=0.01, rounds=100)
    assert result["standard_error"] == 0 and not result["degraded"] and result["pvalue"] == 0.5


def test_a_lucky_test_set_does_not_make_the_next_batch_degraded():
    """7 errors in 750 test rows from a model that errs on 2.5 %: its next batch (75 errors in 3,000) is as
    expected, and the pooled spread says so where each side's own spread (0.99 vs 0.975) would not."""
    ref_true = np.array(["a"] * 750)
    ref_pred = np.array(["b"] * 7 + ["a"] * 743)
    fresh_true = np.array(["a"] * 3000)
    fresh_pred = np.array(["b"] * 75 + ["a"] * 2925)
    result = degradation(ref_true, ref_pred, fresh_true, fresh_pred, metric="accuracy", classes=["a", "b"],
                         alpha=0.001, rounds=2000)
    assert not result["degraded"] and 0.001 < result["pvalue"] < 0.05, result


def test_the_earlier_batches_are_the_ones_this_champion_served_after_its_training_without_a_retrain_mending_them(
        tmp_path):
    from mlpipeline.detect import _served_batches
    from mlpipeline.volume import DataVolume, write_json_atomic

    volume = DataVolume(tmp_path, "m")

    def detected(run_key, partition, model="m", version="3", status="measured", degraded=False, decision=None):
        folder = volume.run_dir(run_key)
        write_json_atomic(folder / "detect.json", {
            "run_key": run_key, "model_name": model, "partition": partition, "champion": {"version": version},
            "degradation": {"status": status, "degraded": degraded}})
        (folder / "fresh.parquet").write_bytes(b"rows")
        if decision:
            write_json_atomic(folder / "decision.json", {"decision": decision})

    detected("rk-t", "2026-01-01")  # the champion's own partition: its training rows
    detected("rk-a1", "2026-01-02")
    detected("rk-a2", "2026-01-03")
    detected("rk-b", "2026-01-04", model="other")
    detected("rk-c", "2026-01-05", version="2")
    detected("rk-d", "2026-01-06", degraded=True, decision="promote")  # mended by a new champion: not its normal
    detected("rk-e", "2026-01-07", status="unavailable")
    detected("rk-f", "2026-01-08")
    detected("rk-r", "2026-01-09", degraded=True, decision="reject")  # no retrain could mend it: the new normal
    detected("rk-g", "2026-01-11")  # the current partition's and later ones are not earlier
    detected("rk-h", "2026-01-12")
    args = ("m", "3", "2026-01-01", "2026-01-11")
    assert _served_batches(volume, *args, limit=10) == ["rk-a1", "rk-a2", "rk-f", "rk-r"]
    assert _served_batches(volume, *args, limit=2) == ["rk-f", "rk-r"]
    assert _served_batches(volume, *args, limit=0) == []
    assert _served_batches(volume, "m", "4", "2026-01-01", "2026-01-11", limit=10) == []

    # what cannot be read is skipped, not an error
    (volume.run_dir("rk-a1") / "detect.json").write_text("{not json")
    (volume.run_dir("rk-a2") / "detect.json").write_text("null")
    (volume.run_dir("rk-f") / "fresh.parquet").unlink()
    (volume.run_dir("rk-r") / "decision.json").write_bytes(b"\xff\xfe")
    volume.run_dir("rk-x").mkdir()
    assert _served_batches(volume, *args, limit=10) == []


def test_r2_normalises_each_earlier_batch_by_its_own_target_variance():
    """Batches whose target level moves from day to day, with the same model error: the spread between the days
    is no error of the model's, so the fresh batch is not degraded."""
    rng = np.random.default_rng(0)
    days = [rng.normal(rng.normal(0, 3), 2, 500) for _ in range(6)]
    ref_true = np.concatenate(days[:5])
    ref_pred = ref_true + rng.normal(0, 0.8, ref_true.size)
    fresh_true = days[5]
    fresh_pred = fresh_true + rng.normal(0, 0.8, fresh_true.size)
    kwargs = {"metric": "r2", "classes": [], "alpha": 0.001, "rounds": 0}
    grouped = degradation(ref_true, ref_pred, fresh_true, fresh_pred, ref_groups=np.repeat(np.arange(5), 500),
                          **kwargs)
    assert not grouped["degraded"] and abs(grouped["reference_score"] - grouped["fresh_score"]) < 0.05, grouped
    pooled = degradation(ref_true, ref_pred, fresh_true, fresh_pred, **kwargs)  # the five days as one set
    assert pooled["degraded"] and pooled["reference_score"] < grouped["reference_score"] / 2, pooled
    constant = degradation(ref_true, ref_pred, np.ones(50), np.ones(50) + 0.1, **kwargs)
    assert constant["status"] == "unavailable" and "constant" in constant["reason"]
