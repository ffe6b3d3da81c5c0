"""The two multi-task deltas against single-task baselines, on known numbers."""

import pytest

from training.evaluate import PrimaryMetric, metric_delta, multitask_delta

MULTI = {"seg": {"miou": 0.6, "acc": 0.9}, "depth": {"rmse": 0.5, "abs_rel": 0.2}}
SINGLE = {"seg": {"miou": 0.5, "acc": 0.9}, "depth": {"rmse": 0.4, "abs_rel": 0.25}}
HIGHER = {"seg": {"miou": True, "acc": True}, "depth": {"rmse": False, "abs_rel": False}}


def test_delta_mtl_takes_each_tasks_primary_metric():
    primaries = {"seg": PrimaryMetric("miou", True), "depth": PrimaryMetric("rmse", False)}
    delta, per_task = multitask_delta(MULTI, SINGLE, primaries)
    assert per_task == pytest.approx({"seg": 0.2, "depth": -0.25})
    assert delta == pytest.approx(-0.025)


def test_delta_m_averages_every_metric_of_every_task():
    delta, changes = metric_delta(MULTI, SINGLE, HIGHER)
    assert changes["seg"] == pytest.approx({"miou": 0.2, "acc": 0.0})
    assert changes["depth"] == pytest.approx({"rmse": -0.25, "abs_rel": 0.2})
    assert delta == pytest.approx((0.2 + 0.0 - 0.25 + 0.2) / 4)


def test_delta_m_leaves_out_a_zero_baseline_and_needs_one_metric():
    single = {"seg": {"miou": 0.0, "acc": 0.9}}
    delta, changes = metric_delta(MULTI, single, HIGHER)
    assert changes == {"seg": {"acc": 0.0}} and delta == 0.0
    with pytest.raises(ValueError, match="at least one"):
        metric_delta(MULTI, {"seg": {"miou": 0.0}}, HIGHER)
