"""Inter-task affinity during training: TAG (Fifty et al., NeurIPS 2021).

"Efficiently Identifying Task Groupings in Multi-Task Learning", eq. 1-3. At step ``t``, for
each task ``i``, a lookahead update of the shared parameters with task ``i``'s gradient alone,
``theta_s^{t+1|i} = theta_s^t - lr * grad_{theta_s} L_i(X, theta_s^t, theta_i^t)``; the affinity
of ``i`` onto ``j`` on the same batch ``X`` is::

    Z^t_{i->j} = 1 - L_j(X, theta_s^{t+1|i}, theta_j^t) / L_j(X, theta_s^t, theta_j^t)

positive when ``i``'s update lowers ``j``'s loss. Averaged over the measured steps it gives a
``T x T`` matrix, ``matrix[i, j] = Z_{i->j}``, diagonal included (a task's own gain, the scale
the off-diagonal entries compare with). Auxiliary tasks are measured like the others, so the
grouping step can tell whether one helps the served tasks.

The lookahead rule: plain SGD, eq. 1 itself, at the optimizer's current learning rate (each
shared parameter at its own parameter group's, so the warm-up/cosine schedule and the fusion
units' multiplier apply), or at a fixed ``lr``. The reference code (google-research ``tag/``)
uses its optimizer's update instead: on CelebA SGD with momentum (``theta + mu * m - lr * g_i``),
on Taskonomy SGD with weight decay (the momentum branch there reads a buffer that is never in
the param group, so it never runs); both at the optimizer's learning rate, both compute the whole
matrix with its diagonal, and both divide by the learning rate (``Z / lr``). The trainer here
uses AdamW, whose update is not a faithful stand-in for task ``i``'s step: 90% of it (``beta1 *
m``) is the momentum of past *combined* gradients, the same for every ``i``, which blurs the
rows together; without that it is ``g_i`` rescaled per coordinate by the combined gradient's
second moment (``lr * sign(g_i)`` at the first step); and its weight decay is no task's. Plain
SGD depends on nothing but the task's gradient and the step size, so it is well defined at every
step, from the first. Weight decay, clipping and loss weights are left out for the same reason.
``Z`` is reported as defined; each record carries the learning rate, and the run summary also
gives the reference's normalised mean ``Z / lr``, which stays comparable across the schedule.

Cost per measurement: ``T`` extra backward passes (each task's gradient on the shared
parameters, through the step's own graph, kept with ``retain_graph``) and ``T`` extra forward
passes (one lookahead each, no graph), plus, under DDP, one all-reduce of the shared gradient and
one of ``T`` losses per task. The model is left exactly as it was: the lookahead parameters are
substituted for one call (``torch.func.functional_call``), never written into the model; the
buffers those forwards update (BatchNorm's running statistics, ``num_batches_tracked``) are
copies; the torch RNG state (CPU and CUDA) is restored; gradients come from
``torch.autograd.grad``, so nothing lands in ``.grad``. Under DDP each task's shared gradient is
averaged over ranks and the losses are the global batch's, so every rank computes the same ``Z``,
that of one process on the global batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from training import distributed
from training.losses import task_losses
from training.models import MultiTaskModel, MultiTaskOutput
from training.tasks import TaskKind

log = logging.getLogger(__name__)

#: The losses of a forward pass by task, as the trainer computes them: ``(output, targets)``.
LossFn = Callable[[MultiTaskOutput, Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]

#: The run summary written at the end of training, next to ``metrics.jsonl``.
SUMMARY_FILE = "affinity_tag.json"


def task_loss_fn(
    tasks: Mapping[str, TaskKind], names: Sequence[str], deep_supervision_weight: float = 1.0
) -> LossFn:
    """Each task's training loss, deep supervision included (``training.losses.task_losses``)."""

    def losses(
        out: MultiTaskOutput, targets: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return task_losses(tasks, names, out, targets, deep_supervision_weight)[0]

    return losses


@dataclass(frozen=True)
class TagMatrix:
    """A ``T x T`` affinity matrix: ``matrix[i, j]`` is ``Z_{tasks[i] -> tasks[j]}``.

    ``matrix`` is float64 on the CPU; NaN where a value is undefined (task ``j``'s loss was 0,
    or task ``i``'s gradient was not finite, as under AMP while the loss scale settles).
    """

    tasks: tuple[str, ...]
    matrix: torch.Tensor

    def to_dict(self) -> dict[str, dict[str, float | None]]:
        """``{i: {j: Z_{i->j}}}`` with ``None`` for undefined values (JSON has no NaN)."""
        return {
            a: {b: _finite_or_none(float(self.matrix[i, j])) for j, b in enumerate(self.tasks)}
            for i, a in enumerate(self.tasks)
        }


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def inter_task_affinity(
    model: MultiTaskModel,
    image: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    loss_fn: LossFn,
    shared: Sequence[nn.Parameter],
    lr: float | Sequence[float],
    *,
    losses: Mapping[str, torch.Tensor] | None = None,
    grad_scale: float = 1.0,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> TagMatrix:
    """TAG's ``Z_{i->j}`` for every pair of tasks on one batch, at the model's parameters.

    Forwards run in the model's current mode (train mode during training, like the real step).

    Args:
        model: The model; left exactly as it was (parameters, buffers, ``.grad``, RNG state).
        image: This rank's images of the batch.
        targets: Their targets by task.
        loss_fn: Each task's loss of an output; its keys give the task order.
        shared: The shared parameters (``model.shared_parameters()``): the lookahead moves these.
        lr: The lookahead's SGD step size: one for every shared parameter, or one each.
        losses: The losses of this batch at the current parameters with their graph (the
            training step's own, before its backward): saves a forward pass. Computed if absent.
        grad_scale: The AMP loss scale: gradients are taken of the scaled loss, then unscaled.
        autocast: A factory of the forward passes' autocast context (the trainer's).

    Returns:
        The affinity matrix, in the order of the losses' tasks.

    Raises:
        ValueError: fewer than two tasks, no shared parameter, a shared parameter not in the
            model, or a learning rate per parameter of the wrong length.
    """
    shared = list(shared)
    if not shared:
        raise ValueError("no shared parameters: a task's update cannot reach another task")
    rates = [float(lr)] * len(shared) if isinstance(lr, int | float) else [float(r) for r in lr]
    if len(rates) != len(shared):
        raise ValueError(f"{len(rates)} learning rates for {len(shared)} shared parameters")
    name_of = {id(p): n for n, p in model.named_parameters()}
    if any(id(p) not in name_of for p in shared):
        raise ValueError("a shared parameter is not one of the model's parameters")
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):  # the CPU and CUDA streams restored after
        cpu_rng = torch.get_rng_state()
        cuda_rng = [torch.cuda.get_rng_state(d) for d in devices]
        if losses is None:
            losses = _losses_with(model, {}, image, targets, loss_fn, autocast)
        tasks = tuple(losses)
        if len(tasks) < 2:
            raise ValueError(f"affinity is between tasks: needs at least two, got {list(tasks)}")
        before = _global_values(losses, tasks)
        z = torch.full((len(tasks), len(tasks)), math.nan, dtype=torch.float64)
        for i, task in enumerate(tasks):
            grad = _shared_gradient(losses[task], shared, grad_scale)
            if not bool(torch.isfinite(grad).all()):
                continue  # every rank has the same averaged gradient: all skip the row
            stepped: dict[str, torch.Tensor] = {}
            offset = 0
            for p, rate in zip(shared, rates, strict=True):
                g = grad[offset : offset + p.numel()].view_as(p).to(p.dtype)
                stepped[name_of[id(p)]] = p.detach() - rate * g
                offset += p.numel()
            torch.set_rng_state(cpu_rng)  # every forward draws the same random stream
            for d, state in zip(devices, cuda_rng, strict=True):
                torch.cuda.set_rng_state(state, d)
            with torch.no_grad():
                after = _losses_with(model, stepped, image, targets, loss_fn, autocast)
                after_values = _global_values(after, tasks)
            z[i] = torch.where(before != 0, 1.0 - after_values / before, math.nan)
    return TagMatrix(tasks, z)


def _losses_with(
    model: MultiTaskModel,
    params: dict[str, torch.Tensor],
    image: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    loss_fn: LossFn,
    autocast: Callable[[], AbstractContextManager[Any]],
) -> Mapping[str, torch.Tensor]:
    """The losses of one forward with ``params`` substituted, on copies of the buffers."""
    state = {n: b.clone() for n, b in model.named_buffers()} | params
    with autocast():
        out = functional_call(model, state, (image,), strict=False)
    return loss_fn(out, targets)


def _shared_gradient(
    loss: torch.Tensor, shared: list[nn.Parameter], grad_scale: float
) -> torch.Tensor:
    """The task's gradient on the shared parameters, flat, averaged over ranks, unscaled."""
    if loss.requires_grad:
        grads = torch.autograd.grad(
            loss * grad_scale if grad_scale != 1.0 else loss,
            shared,
            retain_graph=True,
            materialize_grads=True,  # a parameter this task does not reach: a zero gradient
        )
    else:
        grads = tuple(torch.zeros_like(p) for p in shared)
    flat = torch.cat([g.reshape(-1) for g in grads])
    distributed.average_(flat)
    return flat / grad_scale if grad_scale != 1.0 else flat


def _global_values(losses: Mapping[str, torch.Tensor], tasks: tuple[str, ...]) -> torch.Tensor:
    """The global batch's losses (the mean over ranks), float64 on the CPU, in task order."""
    values = torch.stack([losses[t].detach().float() for t in tasks])
    return distributed.average_(values).double().cpu()


class AffinityMean:
    """The running sum and count of affinity matrices: their mean over the measured steps.

    An entry a measurement left undefined (``None``/NaN) is left out of that entry's mean only.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        """An empty mean over ``tasks`` (the matrix order)."""
        self.tasks = tuple(tasks)
        n = len(self.tasks)
        self.sums = torch.zeros(n, n, dtype=torch.float64)
        self.counts = torch.zeros(n, n, dtype=torch.int64)

    def add(
        self, z: TagMatrix | Mapping[str, Mapping[str, float | None]], scale: float = 1.0
    ) -> None:
        """Add one measurement (a matrix, or a logged ``{i: {j: z}}``), times ``scale``."""
        if isinstance(z, TagMatrix):
            z = z.to_dict()
        for i, a in enumerate(self.tasks):
            for j, b in enumerate(self.tasks):
                v = z[a][b]
                if v is not None and math.isfinite(v):
                    self.sums[i, j] += v * scale
                    self.counts[i, j] += 1

    def mean(self) -> TagMatrix:
        """The mean matrix (NaN where no measurement defined the entry)."""
        m = torch.where(self.counts > 0, self.sums / self.counts.clamp_min(1), math.nan)
        return TagMatrix(self.tasks, m)


def learning_rates(optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter]) -> list[float]:
    """Each parameter's current learning rate: its parameter group's."""
    by_param = {id(p): float(g["lr"]) for g in optimizer.param_groups for p in g["params"]}
    return [by_param[id(p)] for p in params]


class AffinityTracker:
    """A run's affinity: measured every ``every_steps`` optimizer steps, summarised at the end.

    The mean is taken over the ``metrics.jsonl`` records, which a resumed run truncates to its
    checkpoint's step and then rewrites: so a run killed and resumed has the mean of the run
    never interrupted, with no state to checkpoint. The measured cost is this process's.

    Args:
        tasks: The run's tasks, in order (auxiliary ones included).
        every_steps: Measure at every optimizer step ``s`` (counted from 1) with ``s % K == 0``.
        lr: The lookahead's step size; ``None``: the optimizer's current learning rate.
        loss_fn: Each task's loss, as the trainer computes it.
    """

    def __init__(
        self, tasks: Sequence[TaskKind], every_steps: int, lr: float | None, loss_fn: LossFn
    ) -> None:
        if len(tasks) < 2:
            raise ValueError(
                f"inter-task affinity needs at least two tasks; got {[t.name for t in tasks]}"
            )
        if every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps}")
        self.tasks = [t.name for t in tasks]
        self.auxiliary = [t.name for t in tasks if t.auxiliary]
        self.every_steps, self.lr, self.loss_fn = every_steps, lr, loss_fn
        self.seconds = 0.0  # spent measuring, in this process
        self.measured = 0

    def due(self, step: int) -> bool:
        """Whether optimizer step ``step`` (counted from 1) is measured."""
        return step % self.every_steps == 0

    def measure(
        self,
        step: int,
        model: MultiTaskModel,
        image: torch.Tensor,
        targets: Mapping[str, torch.Tensor],
        losses: Mapping[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        grad_scale: float = 1.0,
        autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> dict[str, Any]:
        """Measure on step ``step``'s batch before its backward; returns its log record."""
        start = time.perf_counter()
        shared = model.shared_parameters()
        lr = learning_rates(optimizer, shared) if self.lr is None else self.lr
        z = inter_task_affinity(
            model,
            image,
            targets,
            self.loss_fn,
            shared,
            lr,
            losses=losses,
            grad_scale=grad_scale,
            autocast=autocast,
        )
        if image.is_cuda:
            torch.cuda.synchronize(image.device)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        self.measured += 1
        base = self.lr if self.lr is not None else float(optimizer.param_groups[0]["lr"])
        return {"step": step, "affinity": z.to_dict(), "lr": base, "seconds": seconds}

    def summary(self, records: Iterable[Mapping[str, Any]], train_seconds: float) -> dict[str, Any]:
        """The run's mean matrix from its log records, with what it cost in this process."""
        measured = [r for r in records if "affinity" in r]
        mean, normalised = AffinityMean(self.tasks), AffinityMean(self.tasks)
        for r in measured:
            mean.add(r["affinity"])
            normalised.add(r["affinity"], scale=1.0 / r["lr"])
        lrs = [r["lr"] for r in measured]
        a, t = self.seconds, train_seconds
        return {
            "method": "TAG (Fifty et al. 2021): Z[i][j] = 1 - L_j(theta_s - lr*g_i) / L_j(theta_s)",
            "tasks": self.tasks,
            "auxiliary": self.auxiliary,
            "every_steps": self.every_steps,
            "lr": self.lr,  # null: the optimizer's current learning rate
            "lr_range": [min(lrs), max(lrs)] if lrs else None,
            "measurements": len(measured),
            "steps": [measured[0]["step"], measured[-1]["step"]] if measured else None,
            "mean": mean.mean().to_dict(),
            "mean_over_lr": normalised.mean().to_dict(),  # the reference code's Z / lr
            "cost": {
                "scope": "this process's training loop (a resumed run: its last session)",
                "measurements": self.measured,
                "affinity_seconds": a,
                "train_seconds": t,
                "share": a / t if t > 0 else None,
                "overhead": a / (t - a) if t > a else None,  # vs the same loop not measuring
            },
        }

    def write_summary(self, log_path: Path, out: Path, train_seconds: float) -> dict[str, Any]:
        """Write the summary of ``log_path``'s records to ``out`` atomically; returns it."""
        records = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()]
        summary = self.summary(records, train_seconds)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, out)
        cost = summary["cost"]
        if summary["measurements"] == 0:
            log.warning(
                "affinity: no step measured (every %d steps); %s has no values",
                self.every_steps,
                out,
            )
        log.info(
            "affinity: %d measurements, %.2f s of %.2f s training (%.0f%% overhead) -> %s",
            cost["measurements"],
            cost["affinity_seconds"],
            cost["train_seconds"],
            100 * (cost["overhead"] or 0.0),
            out,
        )
        return summary
