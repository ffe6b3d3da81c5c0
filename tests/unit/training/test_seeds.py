"""Runs that differ only in their seed are one setup: mean and sample std over the seeds."""

import statistics

import pytest

from training.compare import over_seeds, seeds_table, setup_key
from training.errors import ConfigError


def _config(seed: int, lr: float = 1e-3, name: str = "x") -> dict:
    return {"name": name, "optim": {"lr": lr}, "run": {"seed": seed, "amp": "off"}}


def _row(run: str, seed: int, miou: float, rmse: float, delta: float | None, lr: float = 1e-3):
    return {
        "run": run,
        "setup": setup_key(_config(seed, lr, name=run)),
        "seed": seed,
        "architecture": "hps",
        "weighting": "equal",
        "primary": {"seg": ["miou", miou], "depth": ["rmse", rmse]},
        "metrics": {"seg": {"miou": miou, "acc": 0.9}, "depth": {"rmse": rmse}},
        "delta_mtl": delta,
        "delta_per_task": None if delta is None else {"seg": 2 * delta, "depth": 0.0},
        "delta_m": None if delta is None else delta / 2,
    }


def test_the_setup_ignores_name_and_seed_only():
    assert setup_key(_config(0, name="a")) == setup_key(_config(7, name="b"))
    assert setup_key(_config(0)) != setup_key(_config(0, lr=2e-3))


def test_mean_and_sample_std_over_seeds():
    rows = [
        _row("a0", 0, 0.50, 0.80, 0.10),
        _row("a1", 1, 0.60, 0.70, 0.00),
        _row("a2", 2, 0.55, 0.90, -0.04),
        _row("b0", 0, 0.40, 1.00, None, lr=2e-3),
    ]
    setups = over_seeds(rows)
    assert [s["seeds"] for s in setups] == [3, 1]
    a, b = setups
    assert a["seed_values"] == [0, 1, 2] and a["runs"] == ["a0", "a1", "a2"]
    assert a["metrics"]["seg"]["miou"]["mean"] == pytest.approx(0.55)
    assert a["metrics"]["seg"]["miou"]["std"] == pytest.approx(statistics.stdev([0.5, 0.6, 0.55]))
    assert a["metrics"]["depth"]["rmse"]["std"] == pytest.approx(0.1)
    assert a["delta_mtl"]["mean"] == pytest.approx(0.02)
    assert a["delta_m"]["std"] == pytest.approx(statistics.stdev([0.05, 0.0, -0.02]))
    assert a["delta_per_task"]["seg"]["mean"] == pytest.approx(0.04)
    assert a["delta_per_task"]["depth"] == {"mean": 0.0, "std": 0.0}
    assert b["metrics"]["seg"]["miou"] == {"mean": 0.4, "std": 0.0} and b["delta_mtl"] is None
    assert b["delta_per_task"] == {}
    table = seeds_table(setups)
    assert "| hps | equal | 3 | 0.5500 ± 0.0500 | 0.8000 ± 0.1000 | +2.00% ± 7.21 |" in table


def test_a_repeated_seed_is_refused():
    with pytest.raises(ConfigError, match="repeated seeds"):
        over_seeds([_row("a", 0, 0.5, 0.8, 0.1), _row("b", 0, 0.6, 0.7, 0.0)])
