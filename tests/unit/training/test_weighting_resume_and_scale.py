"""Every registered weighting resumes exactly from a checkpoint and ignores the loss scale.

- Resume: a weighting run for a few steps, saved the way checkpoints save it (safetensors) with
  the RNG state, reloaded into a fresh instance, continues exactly as the original does, step
  for step (the same weights and the same gradients, bit for bit).
- Loss scale: mixed precision multiplies every loss by the grad scaler's factor S before the
  backward pass; the gradients must then be exactly S times those without it (grad(S L) / S ==
  grad(L)), whatever the method does inside (clipping, normalising, solving).
- MGDA is exact: on 3 to 6 tasks its direction is the min-norm point of the gradients' convex hull
  to 1e-4, checked against an independent solver.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from training.checkpoint import weighting_tensors
from training.weighting import WEIGHTINGS, BackwardContext, build_weighting

TASKS = ["a", "b", "c"]


def problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=g)
    ys = {t: torch.sin(x @ torch.randn(5, 1, generator=g)) * (i + 1) for i, t in enumerate(TASKS)}
    torch.manual_seed(seed)
    shared = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh())
    heads = torch.nn.ModuleDict({t: torch.nn.Linear(8, 1) for t in TASKS})
    return x, ys, shared, heads


def step(w, x, ys, shared, heads, k: int, scale: float = 1.0):
    """One backward pass; returns the weights and every parameter's gradient."""
    for p in [*shared.parameters(), *heads.parameters(), *w.parameters()]:
        p.grad = None
    z = shared(x)
    losses = {t: torch.nn.functional.mse_loss(heads[t](z), ys[t]) + 0.1 for t in TASKS}
    ctx = BackwardContext(
        shared_parameters=list(shared.parameters()),
        shared_features=[z],
        task_parameters=list(heads.parameters()),
        step=k,
        scale=lambda t: t * scale,
    )
    weights = w.backward(losses, ctx)
    if k % 2 == 1:
        w.end_epoch({t: float(v.detach()) for t, v in losses.items()})
    grads = [p.grad.clone() for p in [*shared.parameters(), *heads.parameters()]]
    return weights, grads


def sgd(shared, heads, lr: float = 0.05, scale: float = 1.0, w=None, x=None, ys=None) -> None:
    """A plain step with the unscaled gradient (what the grad scaler's optimizer step does),
    then the same batch's losses to a weighting that wants them (FAMO), as the trainer does."""
    with torch.no_grad():
        for p in [*shared.parameters(), *heads.parameters()]:
            p -= lr * p.grad / scale
        if w is not None and w.wants_losses_after_step:
            z = shared(x)
            w.after_step({t: torch.nn.functional.mse_loss(heads[t](z), ys[t]) + 0.1 for t in TASKS})


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_resumes_exactly_from_a_checkpoint(name, tmp_path):
    x, ys, shared, heads = problem()
    w = build_weighting(name, TASKS)
    for k in range(4):
        step(w, x, ys, shared, heads, k)
        sgd(shared, heads, w=w, x=x, ys=ys)
    save_file(weighting_tensors(w), str(tmp_path / "w.safetensors"))
    rng = torch.get_rng_state()
    resumed = build_weighting(name, TASKS)
    resumed.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    models = [(shared, heads), copy.deepcopy((shared, heads))]
    runs = []
    for weighting, (s, h) in zip((w, resumed), models, strict=True):
        torch.set_rng_state(rng)
        trace = []
        for k in range(4, 8):
            weights, grads = step(weighting, x, ys, s, h, k)
            sgd(s, h, w=weighting, x=x, ys=ys)
            trace.append((weights, grads))
        runs.append(trace)
    for k, ((w1, g1), (w2, g2)) in enumerate(zip(*runs, strict=True)):
        assert w1 == w2, (name, k, w1, w2)
        assert all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True)), (name, k)


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_gradients_do_not_depend_on_the_loss_scale(name):
    scale = 1024.0
    x, ys, shared, heads = problem(1)
    results = []
    for s in (1.0, scale):
        torch.manual_seed(7)  # the same random choices (RLW, PCGrad, GradDrop, GradVac)
        w = build_weighting(name, TASKS)
        model = copy.deepcopy((shared, heads))
        for k in range(3):  # a few steps: state (GradNorm, FAMO, DWA, Nash-MTL) is involved
            weights, grads = step(w, x, ys, *model, k, scale=s)
            sgd(*model, scale=s, w=w, x=x, ys=ys)
        results.append((weights, [g / s for g in grads]))
    (w1, g1), (w2, g2) = results
    for t in TASKS:
        assert w2[t] == pytest.approx(w1[t], rel=1e-4, abs=1e-7), (name, t)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


def min_norm_point(gramian: np.ndarray) -> float:
    """|d|^2 of the min-norm point of the hull, by brute force over active sets (independent)."""
    import itertools

    n = gramian.shape[0]
    best = np.inf
    for size in range(1, n + 1):
        for active in itertools.combinations(range(n), size):
            g = gramian[np.ix_(active, active)]
            # minimise w^T G w with sum w = 1 on this face: w ~ G^-1 1
            try:
                w = np.linalg.solve(g, np.ones(size))
            except np.linalg.LinAlgError:
                continue
            if w.sum() <= 0:
                continue
            w = w / w.sum()
            if (w >= -1e-12).all():
                best = min(best, float(w @ g @ w))
    return best


@pytest.mark.parametrize("tasks", [3, 4, 6])
def test_mgda_is_the_min_norm_point_to_1e_4(tasks):
    rng = np.random.default_rng(tasks)
    names = [f"t{i}" for i in range(tasks)]
    worst = 0.0
    for _ in range(40):
        jacobian = torch.tensor(rng.standard_normal((tasks, 7)) * rng.uniform(0.1, 10, (tasks, 1)))
        theta = torch.nn.Parameter(torch.zeros(7, dtype=torch.float64))
        losses = {n: jacobian[i] @ theta + 1.0 for i, n in enumerate(names)}
        w = build_weighting("mgda", names)
        weights = w.backward(losses, BackwardContext(shared_parameters=[theta]))
        d = theta.grad
        exact = min_norm_point((jacobian @ jacobian.T).numpy())
        got = float(d @ d)
        assert all(v >= -1e-9 for v in weights.values()) and sum(weights.values()) == (
            pytest.approx(1.0, abs=1e-6)
        )
        worst = max(worst, (got - exact) / max(exact, 1e-12))
    assert worst < 1e-4, worst


def test_famo_measures_the_improvement_on_the_same_batch():
    """The logits move by the same batch's log-loss change over the step, and only then."""
    w = build_weighting("famo", ["a", "b"], {"lr": 0.1, "weight_decay": 0.0})
    theta = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    before = {"a": theta[0] ** 2 + 1.0, "b": theta[1] ** 2 + 1.0}
    w.backward(before, BackwardContext(shared_parameters=[theta]))
    assert torch.equal(w.logits, torch.zeros(2, dtype=torch.float64))  # nothing measured yet
    # a second batch's backward without the after-step losses must not move them either
    other = {"a": theta[0] * 0 + 5.0, "b": theta[1] * 0 + 0.5}
    w.backward(other, BackwardContext(shared_parameters=[theta]))
    assert torch.equal(w.logits, torch.zeros(2, dtype=torch.float64))
    # the same batch after the step: a improved (log 5 -> log 2), b did not (log 0.5 -> log 0.5)
    w.after_step({"a": torch.tensor(2.0), "b": torch.tensor(0.5)})
    improvement = torch.tensor([np.log(5.0) - np.log(2.0), 0.0], dtype=torch.float64)
    z = torch.full((2,), 0.5, dtype=torch.float64)
    grad = z * (improvement - (z * improvement).sum())
    # Adam's first step moves each logit by lr * sign(grad)
    assert torch.allclose(w.logits, -0.1 * torch.sign(grad), atol=1e-6)
    assert float(w.logits[1]) > float(w.logits[0])  # the task that did not improve gains weight
    # and a repeated after_step (nothing new to compare) changes nothing
    kept = w.logits.clone()
    w.after_step({"a": torch.tensor(1.0), "b": torch.tensor(0.5)})
    assert torch.equal(w.logits, kept)
