import numpy as np
import pytest
import torch

from training.errors import ConfigError
from training.weighting import WEIGHTINGS, BackwardContext, build_weighting

TASKS = ["a", "b", "c"]


def problem():
    """Losses of three tasks through a shared parameter (the representation is ``shared * 1``)."""
    shared = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    heads = {t: torch.nn.Parameter(torch.tensor(float(i + 1))) for i, t in enumerate(TASKS)}
    z = shared * 1.0
    losses = {t: ((z * heads[t]) ** 2).sum() * (i + 1) for i, t in enumerate(TASKS)}
    problem.features = [z]
    return shared, heads, losses


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_weighting_produces_gradients_and_weights(name):
    w = build_weighting(name, TASKS)
    shared, heads, losses = problem()
    weights = w.backward(
        losses, BackwardContext(shared_parameters=[shared], shared_features=problem.features)
    )
    assert set(weights) == set(TASKS)
    assert all(v == v and v >= 0 for v in weights.values())
    assert shared.grad is not None and torch.isfinite(shared.grad).all()
    assert all(h.grad is not None for h in heads.values())


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_weighting_state_round_trips(name):
    w = build_weighting(name, TASKS)
    w.end_epoch({"a": 1.0, "b": 2.0, "c": 3.0})
    w.end_epoch({"a": 0.5, "b": 2.0, "c": 1.0})
    clone = build_weighting(name, TASKS)
    clone.load_state_dict(w.state_dict())
    for k, v in w.state_dict().items():
        assert torch.equal(v, clone.state_dict()[k])


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_weighting_rejects_mismatched_tasks(name):
    w = build_weighting(name, TASKS)
    _, _, losses = problem()
    del losses["c"]
    with pytest.raises(ValueError, match="weighting built for"):
        w.backward(losses, BackwardContext(shared_parameters=[]))


def test_equal_gives_the_gradient_of_the_plain_sum():
    shared, _, losses = problem()
    build_weighting("equal", TASKS).backward(losses, BackwardContext(shared_parameters=[shared]))
    s2, _, l2 = problem()
    (g,) = torch.autograd.grad(sum(l2.values()), [s2])
    assert torch.allclose(shared.grad, g)


def test_fixed_weights_scale_each_task():
    shared, _, losses = problem()
    w = build_weighting("fixed", TASKS, {"weights": {"a": 2.0, "c": 0.0}})
    weights = w.backward(losses, BackwardContext(shared_parameters=[shared]))
    assert weights == pytest.approx({"a": 2.0, "b": 1.0, "c": 0.0})


def test_fixed_rejects_unknown_task():
    with pytest.raises(ConfigError, match="unknown tasks"):
        build_weighting("fixed", TASKS, {"weights": {"zzz": 1.0}})


def test_dwa_follows_the_paper_formula():
    w = build_weighting("dwa", TASKS, {"temperature": 2.0})
    assert torch.allclose(w.current_weights(), torch.ones(3, dtype=torch.float64))
    w.end_epoch({"a": 1.0, "b": 1.0, "c": 1.0})
    assert torch.allclose(w.current_weights(), torch.ones(3, dtype=torch.float64))
    w.end_epoch({"a": 0.5, "b": 1.0, "c": 2.0})
    r = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    expected = 3 * torch.softmax(r / 2.0, 0)
    assert torch.allclose(w.current_weights(), expected)
    assert w.current_weights()[2] > w.current_weights()[0]  # slow task gets more weight


@pytest.mark.parametrize(
    ("form", "optimum"),
    [
        # Kendall et al.: regression exp(-s) L / 2 + s / 2 (s* = log L), classification
        # exp(-s) L + s / 2 (s* = log 2L); "big" is the regression task
        ("kendall", {"small": np.log(0.2), "big": np.log(10.0)}),
        ("libmtl", {"small": np.log(0.1), "big": np.log(10.0)}),
        ("simple", {"small": np.log(0.1), "big": np.log(10.0)}),
    ],
)
def test_uncertainty_learns_smaller_weight_for_noisier_task(form, optimum):
    w = build_weighting("uncertainty", ["small", "big"], {"form": form}, regression=["big"])
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    for _ in range(2000):
        opt.zero_grad()
        w.backward({"small": torch.tensor(0.1), "big": torch.tensor(10.0)}, BackwardContext([]))
        opt.step()
    s = w.log_vars.detach()
    assert s[0].item() == pytest.approx(optimum["small"], abs=0.02)
    assert s[1].item() == pytest.approx(optimum["big"], abs=0.02)


def test_uncertainty_regression_tasks_come_from_the_task_kinds():
    from training.tasks import build_task

    assert build_task("d", "depth").regression and build_task("n", "normals").regression
    assert not build_task("s", "segmentation", ("a", "b")).regression
    w = build_weighting("uncertainty", ["d", "s"], regression=["d"])
    assert w.loss_factor.tolist() == [0.5, 1.0] and w.log_var_factor.tolist() == [0.5, 0.5]
    # the config may still set them itself
    w = build_weighting("uncertainty", ["d", "s"], {"regression": []}, regression=["d"])
    assert w.loss_factor.tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="unknown tasks"):
        build_weighting("uncertainty", ["d", "s"], {"regression": ["x"]})


def test_unknown_parameter_is_named():
    with pytest.raises(ConfigError, match=r"no parameter.*'temp'.*accepts \['temperature'\]"):
        build_weighting("dwa", TASKS, {"temp": 2})


def test_bad_value_is_a_config_error():
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        build_weighting("dwa", TASKS, {"temperature": -1})


def test_unknown_weighting_lists_valid():
    with pytest.raises(
        KeyError, match=r"valid: aligned_mtl, cagrad, .*dwa, equal, .*uncertainty, upgrad"
    ):
        build_weighting("gradnorm_typo", TASKS)
