"""Every registered weighting: trains a two-task problem, and keeps the promise of its paper."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from training.weighting import WEIGHTINGS, BackwardContext, GradientAggregation, build_weighting

TOL = 1e-4


def toy_problem(seed: int = 0):
    """A shared layer and two heads fitting two regression targets that pull it apart."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 6, generator=g)
    y1 = x @ torch.randn(6, 1, generator=g)
    y2 = torch.sin(x @ torch.randn(6, 1, generator=g)) * 3
    shared = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh())
    heads = torch.nn.ModuleDict({"a": torch.nn.Linear(16, 1), "b": torch.nn.Linear(16, 1)})
    return x, {"a": y1, "b": y2}, shared, heads


def losses_of(x, ys, shared, heads):
    z = shared(x)
    return z, {t: torch.nn.functional.mse_loss(heads[t](z), ys[t]) for t in ("a", "b")}


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_trains_a_two_task_problem_and_both_losses_go_down(name):
    torch.manual_seed(0)
    x, ys, shared, heads = toy_problem()
    w = build_weighting(name, ["a", "b"])
    params = [*shared.parameters(), *heads.parameters(), *w.parameters()]
    opt = torch.optim.Adam(params, lr=0.01)
    with torch.no_grad():
        _, start = losses_of(x, ys, shared, heads)
    for step in range(150):
        opt.zero_grad(set_to_none=True)
        z, losses = losses_of(x, ys, shared, heads)
        weights = w.backward(
            losses,
            BackwardContext(
                shared_parameters=list(shared.parameters()),
                shared_features=[z],
                task_parameters=list(heads.parameters()),
                step=step,
            ),
        )
        assert set(weights) == {"a", "b"} and all(v == v for v in weights.values())
        opt.step()
        if w.wants_losses_after_step:  # the same batch after the step, as the trainer does
            with torch.no_grad():
                w.after_step(losses_of(x, ys, shared, heads)[1])
        if step % 10 == 9:
            w.end_epoch({t: float(v.detach()) for t, v in losses.items()})
    with torch.no_grad():
        _, end = losses_of(x, ys, shared, heads)
    for t in ("a", "b"):
        assert float(end[t]) < 0.95 * float(start[t]), (t, float(start[t]), float(end[t]))


# ---- what each method promises -------------------------------------------------------------

# two conflicting task gradients of different norms on a 3-dimensional shared parameter
J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 2.0]])


def one_step(name: str, **params) -> tuple[torch.Tensor, dict[str, float], object]:
    """Losses linear in a shared parameter theta (gradient rows = J); returns theta's grad."""
    w = build_weighting(name, ["a", "b"], params)
    if isinstance(w, GradientAggregation):
        w.record = True
    theta = torch.nn.Parameter(torch.zeros(3))
    z = theta * 1.0  # the shared representation: its gradient rows are J too
    scale = torch.tensor([2.0, 3.0])  # losses must be positive for GLS and FAMO
    losses = {"a": J[0] @ z + scale[0] * 10, "b": J[1] @ z + scale[1] * 10}
    weights = w.backward(losses, BackwardContext(shared_parameters=[theta], shared_features=[z]))
    return theta.grad.detach().clone(), weights, w


def no_conflict(d: torch.Tensor, cos_tol: float = 1e-3) -> None:
    """<d, g_t> >= 0 for every task, up to the projectors' regularisation (reg_eps 1e-4)."""
    cos = J @ d / (J.norm(dim=1) * d.norm())
    assert (cos >= -cos_tol).all(), cos


def mgda(d, weights, w):  # the min-norm point of the hull: g_t . d >= |d|^2 for every t
    assert (J @ d >= d @ d - TOL).all() and sum(weights.values()) == pytest.approx(1, abs=1e-4)


def imtl_g(d, weights, w):  # equal projections on every unit gradient, positive
    proj = J @ d / J.norm(dim=1)
    assert proj[0] == pytest.approx(float(proj[1]), rel=1e-3) and proj[0] > 0


def imtl_l(w):  # the loss scales s_t get d/ds (e^s L - s) = e^s L - 1 (s = 0 at the start)
    assert torch.allclose(w.loss_scale.grad, torch.tensor([20.0 - 1.0, 30.0 - 1.0]))


def cagrad(d, weights, w):  # the worst task improves at least as much as under the mean gradient
    g0 = J.mean(dim=0)
    assert (J @ d / d.norm()).min() >= (J @ g0 / g0.norm()).min() - TOL


def graddrop(d, weights, w):  # every coordinate keeps one sign's contributions only
    for j in range(3):
        signs = {float(torch.sign(J[t, j])) for t in range(2)}
        assert d[j] == 0 or float(torch.sign(d[j])) in signs
        if len(signs) == 2:  # a conflicting coordinate: exactly one task's component survives
            assert any(torch.isclose(d[j], J[t, j]) for t in range(2)), (j, d)


def gradvac(d, weights, w):  # first step (targets 0): the PCGrad projection, state kept after
    pc, _, _ = one_step("pcgrad")
    assert torch.allclose(d, pc, atol=1e-5)
    assert any(b is not None for b in w.buffers())


def positive_weights(expected_sum: float | None = None) -> Callable:
    def check(d, weights, w):
        assert all(v > 0 for v in weights.values()), weights
        if expected_sum is not None:
            assert sum(weights.values()) == pytest.approx(expected_sum, rel=1e-5)
        no_conflict_or_sum = J.T @ torch.tensor([weights["a"], weights["b"]])
        assert torch.allclose(d, no_conflict_or_sum, rtol=1e-4, atol=1e-4)  # d = sum_t w_t g_t

    return check


def gls(d, weights, w):  # weight of task t = L / (T L_t), L the geometric mean
    la, lb = 20.0, 30.0
    total = (la * lb) ** 0.5
    assert weights == pytest.approx({"a": total / (2 * la), "b": total / (2 * lb)}, rel=1e-5)
    positive_weights()(d, weights, w)


PROMISES: dict[str, Callable] = {
    "equal": lambda d, wts, w: (wts == {"a": 1.0, "b": 1.0}) and positive_weights(2)(d, wts, w),
    "fixed": positive_weights(2),
    "uncertainty": positive_weights(2),  # exp(-s) = 1 at the start
    "dwa": positive_weights(2),  # T * softmax
    "rlw": positive_weights(2),
    "gradnorm": positive_weights(2),  # renormalised to sum to T
    "gls": gls,
    "famo": positive_weights(),
    "mgda": lambda d, wts, w: (no_conflict(d), mgda(d, wts, w)),
    "pcgrad": lambda d, wts, w: no_conflict(d),
    "upgrad": lambda d, wts, w: no_conflict(d),
    "dualproj": lambda d, wts, w: no_conflict(d),
    "nash_mtl": lambda d, wts, w: (no_conflict(d), None),
    "aligned_mtl": lambda d, wts, w: no_conflict(d),
    "imtl_g": imtl_g,
    "imtl": lambda d, wts, w: (imtl_g(d, wts, w), imtl_l(w)),
    "cagrad": cagrad,
    "graddrop": graddrop,
    "gradvac": gradvac,
}


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_keeps_the_promise_of_its_paper(name):
    assert name in PROMISES, f"weighting {name!r} must say what it promises in PROMISES"
    torch.manual_seed(0)
    d, weights, w = one_step(name)
    assert torch.isfinite(d).all() and d.norm() > 0
    PROMISES[name](d, weights, w)


@pytest.mark.parametrize("name", ["mgda", "upgrad", "pcgrad", "dualproj", "nash_mtl"])
def test_representation_gradients_give_the_same_promise(name):
    d, _, _ = one_step(name, gradients="representation")
    no_conflict(d)


@pytest.mark.parametrize("name", ["dualproj", "upgrad"])
def test_dual_cone_projections_are_exact_without_regularisation(name):
    d, _, _ = one_step(name, reg_eps=0.0)
    no_conflict(d, cos_tol=1e-6)


def test_mgda_equals_the_closed_form_for_two_tasks():
    d, _, _ = one_step("mgda")
    g1, g2 = J
    a = float(((g2 - g1) @ g2) / ((g1 - g2) @ (g1 - g2)))
    assert torch.allclose(d, a * g1 + (1 - a) * g2, atol=1e-3)


def test_gradient_methods_give_task_parameters_their_own_gradient():
    torch.manual_seed(0)
    x, ys, shared, heads = toy_problem()
    z, losses = losses_of(x, ys, shared, heads)
    w = build_weighting("upgrad", ["a", "b"])
    w.backward(losses, BackwardContext(list(shared.parameters()), [z], list(heads.parameters())))
    _, losses2 = losses_of(x, ys, shared, heads)
    want = torch.autograd.grad(losses2["a"], list(heads["a"].parameters()))
    for p, g in zip(heads["a"].parameters(), want, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-6)


@pytest.mark.parametrize("name", ["gradvac", "famo", "gradnorm", "nash_mtl"])
def test_stateful_methods_carry_their_state_through_a_checkpoint(name):
    torch.manual_seed(0)
    x, ys, shared, heads = toy_problem()
    w = build_weighting(name, ["a", "b"])
    for _ in range(3):
        z, losses = losses_of(x, ys, shared, heads)
        w.backward(
            losses, BackwardContext(list(shared.parameters()), [z], list(heads.parameters()))
        )
    clone = build_weighting(name, ["a", "b"])
    clone.load_state_dict(w.state_dict())
    for k, v in w.state_dict().items():
        assert torch.equal(v, clone.state_dict()[k]), k


def test_representation_mode_is_exact_when_shared_tensors_are_nested():
    """Shared tensors [A, B] with A computed from B (as HPS exposes [neck map, backbone map]):
    the shared parameters get exactly the gradient of sum_t w_t L_t, nothing counted twice."""
    torch.manual_seed(0)
    x, ys, shared, heads = toy_problem()
    neck = torch.nn.Linear(16, 16)
    b = shared(x)
    a = torch.tanh(neck(b))
    losses = {
        "a": torch.nn.functional.mse_loss(heads["a"](a), ys["a"]),
        "b": torch.nn.functional.mse_loss(heads["b"](b), ys["b"]),
    }
    w = build_weighting("mgda", ["a", "b"], {"gradients": "representation"})
    params = [*shared.parameters(), *neck.parameters()]
    weights = w.backward(losses, BackwardContext(params, [a, b], list(heads.parameters())))
    got = [p.grad.clone() for p in params]
    b2 = shared(x)
    a2 = torch.tanh(neck(b2))
    total = weights["a"] * torch.nn.functional.mse_loss(heads["a"](a2), ys["a"]) + weights[
        "b"
    ] * torch.nn.functional.mse_loss(heads["b"](b2), ys["b"])
    want = torch.autograd.grad(total, params)
    for g, e in zip(got, want, strict=True):
        assert torch.allclose(g, e, atol=1e-6)


@pytest.mark.parametrize("name", ["graddrop"])
def test_coordinatewise_methods_refuse_representation_mode(name):
    from training.errors import ConfigError

    with pytest.raises(ConfigError, match="needs gradients='parameters'"):
        build_weighting(name, ["a", "b"], {"gradients": "representation"})
