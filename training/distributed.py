"""Data-parallel training under ``torchrun``: one process per GPU (NCCL) or per CPU slot (gloo).

Every rank holds the whole model and takes its contiguous slice of each global batch, so N ranks
compute what one process computes on the same global batch:
- BatchNorm statistics are taken over the global batch (``SyncBatchNorm`` on GPU; on CPU, where
  PyTorch's only works on accelerators, :class:`GlobalBatchNorm2d`, the same over gloo);
- the losses a weighting sees carry the global batch's values (their gradients stay local), so
  every rank computes the same task weights; gradient methods average their Jacobian across
  ranks before combining it (``training.weighting.gradient``);
- gradients are averaged across ranks before the optimizer step.
Rank 0 alone writes checkpoints, logs and the final weights.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler
from typing_extensions import override

from training.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files."""
        return self.rank == 0


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed(device: str) -> DistContext:
    """Join the process group ``torchrun`` describes (WORLD_SIZE, RANK, LOCAL_RANK), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30)
        )
    return DistContext(world, rank, local)


def shutdown() -> None:
    """Leave the process group."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op alone)."""
    if active():
        dist.barrier()


class RankSlice(Sampler[list[int]]):
    """This rank's contiguous slice of every global batch of ``batches``."""

    def __init__(self, batches: Sampler[list[int]], ctx: DistContext, batch_size: int) -> None:
        """Split each batch of ``batch_size`` (divisible by the world size) among the ranks."""
        if batch_size % ctx.world_size:
            raise ConfigError(
                f"optim.batch_size {batch_size} (the global batch) must be divisible by the "
                f"{ctx.world_size} processes"
            )
        self.batches, self.ctx = batches, ctx
        self.per_rank = batch_size // ctx.world_size

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        k, r = self.per_rank, self.ctx.rank
        for batch in self.batches:
            yield batch[r * k : (r + 1) * k]


def global_values(losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each loss with the global batch's value (the mean over ranks) and its local gradient."""
    if not active():
        return losses
    names = list(losses)
    values = torch.stack([losses[n].detach() for n in names])
    dist.all_reduce(values)
    values /= dist.get_world_size()
    return {n: losses[n] + (values[i] - losses[n].detach()) for i, n in enumerate(names)}


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average ``.grad`` across ranks (a parameter with no gradient anywhere stays without)."""
    if not active():
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    start = 0
    for p in params:
        n = p.numel()
        if p.grad is not None:
            p.grad.copy_(flat[start : start + n].view_as(p))
        start += n


def average_(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` across ranks in place (no-op alone); returns it."""
    if active():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` across ranks in place (no-op alone); returns it."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def broadcast_state(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not active():
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the global batch of a gloo job (CPU): statistics summed across ranks.

    The sums go through a differentiable all-reduce, so gradients flow through the global
    statistics to every rank's inputs, exactly as in one process on the whole batch.
    """

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype)
        stats = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), count])
        stats = all_reduce(stats)
        total = stats[-1]
        mean = stats[:c] / total
        var = (stats[c : 2 * c] / total - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * total / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(m * mean)
                assert self.running_var is not None
                self.running_var.mul_(1 - m).add_(m * unbiased)
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked += 1
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def synchronise_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers that normalise over the global batch (GPU: SyncBatchNorm)."""
    if not active():
        return model
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement)
        else:
            synchronise_batchnorm(child, device)
    return model
