"""The training loop: AdamW + warm-up/cosine, AMP on CUDA, clipping, exact resume, DDP.

Reproducibility: the order of training samples in epoch ``e`` is a permutation drawn from
``(seed, e)`` and each sample's augmentation from ``(seed, e, sample id)``, so a run resumed from
a checkpoint (taken at an epoch end or every ``checkpoint_every_steps``) sees exactly the batches
the uninterrupted run would have seen, and on a deterministic device reaches the same weights.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from training import distributed
from training.analysis.tag import SUMMARY_FILE, AffinityTracker, task_loss_fn
from training.checkpoint import (
    Progress,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_weights,
)
from training.config import TrainConfig
from training.data.augment import SeededAugment
from training.data.folder import FolderDataset
from training.errors import ConfigError
from training.evaluate import evaluate_model
from training.losses import task_losses
from training.models import MultiTaskModel
from training.runs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    METRICS_LOG,
    WEIGHTS_FILE,
    build_model,
    write_run_files,
)
from training.schedule import warmup_cosine
from training.setup import check_and_build_tasks, dataset_description
from training.tasks import TaskKind
from training.weighting import BackwardContext, Weighting, build_weighting

log = logging.getLogger(__name__)


class EpochBatches(Sampler[list[int]]):
    """Batches of one epoch from a permutation seeded by ``(seed, epoch)``, from batch ``start``."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, start: int = 0) -> None:
        self.n, self.batch_size, self.start = n, batch_size, start
        rng = np.random.default_rng([seed, epoch])
        self.order = rng.permutation(n).tolist()

    def __len__(self) -> int:
        return self.n // self.batch_size - self.start

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.start, self.n // self.batch_size):
            yield self.order[b * self.batch_size : (b + 1) * self.batch_size]


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images and per-task targets into batch tensors."""
    tasks = samples[0]["targets"].keys()
    return {
        "id": [s["id"] for s in samples],
        "image": torch.stack([s["image"] for s in samples]),
        "targets": {t: torch.stack([s["targets"][t] for s in samples]) for t in tasks},
    }


def optimizer_groups(model: MultiTaskModel, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The model's parameter groups: fusion units (if any) at their own learning rate."""
    decay = cfg.optim.weight_decay
    fusion = model.fusion_parameters()
    ids = {id(p) for p in fusion}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups: list[dict[str, Any]] = [{"params": rest, "weight_decay": decay}]
    if fusion:
        lr = cfg.optim.lr * cfg.model.fusion_lr_scale
        groups.append({"params": fusion, "weight_decay": decay, "lr": lr})
    return groups


#: Training images whose targets set the heads' initial biases (evenly spread over the split).
BIAS_SAMPLES = 64


def start_from_the_targets(model: MultiTaskModel, tasks: list[Any], cfg: TrainConfig) -> None:
    """Set each head's initial output bias from training targets, where its task kind says so."""
    wanting = [t for t in tasks if type(t).initial_bias is not TaskKind.initial_bias]
    if not wanting:
        return
    names = [t.name for t in wanting]
    data = FolderDataset(
        cfg.data.root, cfg.data.train_split, names, None, cfg.data.mean, cfg.data.std
    )
    step = max(1, len(data) // BIAS_SAMPLES)
    samples = [data[i]["targets"] for i in range(0, len(data), step)][:BIAS_SAMPLES]
    for task in wanting:
        bias = task.initial_bias([s[task.name] for s in samples])
        if bias is not None:
            model.set_output_bias(task.name, bias)
            log.info("%s starts at %s", task.name, [round(float(b), 4) for b in bias])


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = not deterministic


def pick_device(choice: str) -> torch.device:
    """``auto`` means CUDA when present, else CPU; asking for CUDA without one is an error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device: cuda requested but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, global_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be redone)."""
    if not path.is_file():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= global_step
    ]
    path.write_text("".join(line + "\n" for line in keep))


class Trainer:
    """Trains one multi-task model as configured, writing a run directory."""

    def __init__(self, cfg: TrainConfig, out: str | Path, resume: bool = False) -> None:
        """Check the config against the data and build everything; nothing is trained yet."""
        self.cfg, self.out, self.resume = cfg, Path(out), resume
        self.dist = distributed.init_distributed(cfg.run.device)
        self.tasks, self.input_size = check_and_build_tasks(cfg)
        self._check_run_dir()
        seed_everything(cfg.run.seed, cfg.run.deterministic)
        self.device = pick_device(cfg.run.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.amp = cfg.run.amp == "on" or (cfg.run.amp == "auto" and self.device.type == "cuda")
        if self.amp and self.device.type != "cuda":
            raise ConfigError(
                "run.amp: 'on' needs a CUDA device (mixed precision is CUDA-only here)"
            )

        names = cfg.task_names
        self.augment = SeededAugment(cfg.data.augment, cfg.run.seed)
        self.train_set = FolderDataset(
            cfg.data.root, cfg.data.train_split, names, self.augment, cfg.data.mean, cfg.data.std
        )
        self.val_set = FolderDataset(
            cfg.data.root, cfg.data.val_split, names, None, cfg.data.mean, cfg.data.std
        )
        bs = cfg.optim.batch_size
        if len(self.train_set) < bs:
            raise ConfigError(
                f"optim.batch_size {bs} is larger than the {len(self.train_set)} training images"
            )
        self.batches_per_epoch = len(self.train_set) // bs
        self.deep_supervision: dict[str, float] = {}  # the last step's terms, for the log
        if cfg.run.limit_train_batches:
            self.batches_per_epoch = min(self.batches_per_epoch, cfg.run.limit_train_batches)

        self.model: MultiTaskModel = build_model(cfg, self.tasks).to(self.device)
        if not resume:
            start_from_the_targets(self.model, self.tasks, cfg)
        distributed.synchronise_batchnorm(self.model, self.device)
        distributed.broadcast_state(self.model)
        self.weighting: Weighting = build_weighting(
            cfg.weighting.name,
            names,
            cfg.weighting.params,
            regression=[t.name for t in self.tasks if t.regression],
        ).to(self.device)
        groups = optimizer_groups(self.model, cfg)
        extra = list(self.weighting.parameters())
        if extra:
            groups.append({"params": extra, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas)
        total = cfg.optim.epochs * self.batches_per_epoch
        self.scheduler = warmup_cosine(
            self.optimizer, total, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.progress = Progress()
        self.affinity = self._affinity_tracker()
        self.affinity_record: dict[str, Any] | None = None  # this step's, for the log
        self.train_seconds = 0.0  # in the training loop, this process
        if self.dist.enabled:
            log.info("rank %d of %d on %s", self.dist.rank, self.dist.world_size, self.device)
        distributed.barrier()  # every rank has checked the run directory before rank 0 writes

    def _affinity_tracker(self) -> AffinityTracker | None:
        """The inter-task affinity measurement the config asks for (``analysis.affinity``)."""
        aff = self.cfg.analysis.affinity
        if aff is None or aff.every_steps is None:
            return None
        if len(self.tasks) < 2:
            raise ConfigError(
                "analysis.affinity: inter-task affinity is measured between tasks; this run "
                f"trains one ({self.tasks[0].name}): nothing to measure, remove the section"
            )
        if not self.model.shared_parameters():
            raise ConfigError(
                f"analysis.affinity: {self.cfg.model.architecture} shares no parameter between "
                "tasks, so no task's update reaches another: nothing to measure"
            )
        names, weight = self.cfg.task_names, self.cfg.model.deep_supervision_weight
        loss_fn = task_loss_fn(self.tasks_by_name, names, weight)
        return AffinityTracker(self.tasks, aff.every_steps, aff.lr, loss_fn)

    def _check_run_dir(self) -> None:
        cfg_file = self.out / CONFIG_FILE
        if self.resume:
            if find_checkpoint(self.out / CHECKPOINT_DIR) is None:
                raise ConfigError(f"--resume: no checkpoint in {self.out / CHECKPOINT_DIR}")
            from training.config import load_config

            saved = load_config(cfg_file)
            if saved != self.cfg:
                raise ConfigError(
                    f"--resume: the config differs from the one {self.out} was started with "
                    f"({cfg_file}); resume with that config or start a new run"
                )
        elif cfg_file.exists():
            raise ConfigError(
                f"{self.out} already holds a run; "
                "pass --resume to continue it or choose a new --out"
            )

    def fit(self) -> dict[str, dict[str, float]]:
        """Train to the configured number of epochs; returns the final validation metrics."""
        cfg = self.cfg
        log_path = self.out / METRICS_LOG
        if self.resume:
            self.progress = load_checkpoint(
                self.out / CHECKPOINT_DIR,
                self.model,
                self.optimizer,
                self.scheduler,
                self.weighting,
            )
            if self.dist.is_main:
                _truncate_log(log_path, self.progress.global_step)
            log.info(
                "resumed %s at epoch %d batch %d",
                self.out,
                self.progress.epoch,
                self.progress.batch_in_epoch,
            )
        elif self.dist.is_main:
            write_run_files(
                self.out,
                cfg.model_dump(mode="json"),
                self.tasks,
                self.input_size,
                dataset_description(cfg.data.root),
            )

        metrics: dict[str, dict[str, float]] = {}
        while self.progress.epoch < cfg.optim.epochs:
            start = time.perf_counter()
            self._train_epoch(log_path)
            self.train_seconds += time.perf_counter() - start
            metrics = self.validate()
            epoch = self.progress.epoch
            mean = self._epoch_means()
            self.weighting.end_epoch(mean)
            self._log(
                log_path,
                {
                    "step": self.progress.global_step,
                    "epoch": epoch + 1,
                    "train_loss": mean,
                    "val": metrics,
                },
            )
            log.info("epoch %d/%d val %s", epoch + 1, cfg.optim.epochs, _short(metrics))
            self.progress = Progress(epoch=epoch + 1, global_step=self.progress.global_step)
            self._checkpoint()

        if self.affinity is not None and self.dist.is_main:
            self.affinity.write_summary(log_path, self.out / SUMMARY_FILE, self.train_seconds)
        if self.dist.is_main:
            save_weights(self.model, self.out / WEIGHTS_FILE)
        distributed.shutdown()  # waits for every rank, then leaves the process group
        return metrics

    def _log(self, path: Path, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            _append_jsonl(path, record)

    def _epoch_means(self) -> dict[str, float]:
        n = max(self.progress.epoch_loss_count, 1)
        return {t: self.progress.epoch_loss_sums.get(t, 0.0) / n for t in self.cfg.task_names}

    def _checkpoint(self) -> None:
        if self.dist.is_main:
            save_checkpoint(
                self.out / CHECKPOINT_DIR,
                self.model,
                self.optimizer,
                self.scheduler,
                self.weighting,
                self.progress,
            )
        distributed.barrier()

    def _loader(self) -> DataLoader:
        p = self.progress
        self.augment.set_epoch(p.epoch)
        sampler: Sampler[list[int]] = EpochBatches(
            len(self.train_set),
            self.cfg.optim.batch_size,
            self.cfg.run.seed,
            p.epoch,
            p.batch_in_epoch,
        )
        if self.dist.enabled:
            sampler = distributed.RankSlice(sampler, self.dist, self.cfg.optim.batch_size)
        # A generator of its own: without one, every new iterator draws its base seed from the
        # global RNG, so resuming mid-epoch (a new iterator) would shift the random stream the
        # random weightings (RLW, PCGrad, GradDrop, GradVac) draw from.
        generator = torch.Generator().manual_seed(self.cfg.run.seed * 100_003 + p.epoch)
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=self.cfg.data.num_workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            generator=generator,
        )

    def _train_epoch(self, log_path: Path) -> None:
        from tqdm import tqdm

        cfg, p = self.cfg, self.progress
        self.model.train()
        remaining = self.batches_per_epoch - p.batch_in_epoch
        bar = tqdm(
            total=self.batches_per_epoch,
            initial=p.batch_in_epoch,
            desc=f"epoch {p.epoch + 1}/{cfg.optim.epochs}",
            disable=None if cfg.run.progress else True,
            leave=False,
        )
        for i, batch in enumerate(self._loader()):
            if i >= remaining:
                break
            losses, weights = self.step(batch)
            for t, v in losses.items():
                p.epoch_loss_sums[t] = p.epoch_loss_sums.get(t, 0.0) + v
            p.epoch_loss_count += 1
            p.batch_in_epoch += 1
            p.global_step += 1
            if self.affinity_record is not None:
                self._log(log_path, self.affinity_record)
                self.affinity_record = None
            bar.update(1)
            bar.set_postfix({t: f"{v:.3f}" for t, v in losses.items()}, refresh=False)
            if p.global_step % cfg.run.log_every_steps == 0:
                self._log(
                    log_path,
                    {
                        "step": p.global_step,
                        "epoch": p.epoch + p.batch_in_epoch / self.batches_per_epoch,
                        "lr": self.scheduler.get_last_lr()[0],
                        "loss": losses,
                        "weights": weights,
                    }
                    | (
                        {"deep_supervision": self.deep_supervision} if self.deep_supervision else {}
                    ),
                )
            every = cfg.run.checkpoint_every_steps
            if every and p.global_step % every == 0 and p.batch_in_epoch < self.batches_per_epoch:
                self._checkpoint()
        bar.close()

    def step(self, batch: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
        """One optimizer step on one batch; returns per-task losses and weights."""
        cfg = self.cfg
        image = batch["image"].to(self.device, non_blocking=True)
        targets = {t: v.to(self.device, non_blocking=True) for t, v in batch["targets"].items()}
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()
        with autocast:
            out = self.model(image)
        losses, deep = task_losses(
            self.tasks_by_name, cfg.task_names, out, targets, cfg.model.deep_supervision_weight
        )
        step = self.progress.global_step + 1  # the optimizer step this batch makes, from 1
        if self.affinity is not None and self.affinity.due(step):
            # at theta^t, on this batch, before the step's backward (which reuses the graph)
            self.affinity_record = self.affinity.measure(
                step,
                self.model,
                image,
                targets,
                losses,
                self.optimizer,
                grad_scale=self.scaler.get_scale() if self.amp else 1.0,
                autocast=self._autocast,
            )
        self.deep_supervision = {k: float(v.detach()) for k, v in deep.items()}
        losses = distributed.global_values(losses)  # the same weights on every rank
        self.optimizer.zero_grad(set_to_none=True)
        ctx = BackwardContext(
            shared_parameters=self.model.shared_parameters(),
            shared_features=list(out.shared),
            task_parameters=self.model.task_parameters(),
            step=self.progress.global_step,
            epoch=self.progress.epoch,
            scale=self.scaler.scale,
        )
        weights = self.weighting.backward(losses, ctx)
        distributed.average_gradients([*self.model.parameters(), *self.weighting.parameters()])
        if cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.weighting.wants_losses_after_step:
            self.weighting.after_step(self._losses_after_step(image, targets))
        return {t: float(v.detach()) for t, v in losses.items()}, weights

    def _losses_after_step(
        self, image: torch.Tensor, targets: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The same batch's losses after the step (no gradients; train mode, as FAMO's code)."""
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()
        with torch.no_grad(), autocast:
            out = self.model(image)
            losses, _ = task_losses(
                self.tasks_by_name,
                self.cfg.task_names,
                out,
                targets,
                self.cfg.model.deep_supervision_weight,
            )
        return distributed.global_values(losses)

    def _autocast(self) -> torch.autocast | nullcontext[None]:
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()

    @property
    def tasks_by_name(self) -> dict[str, Any]:
        """Task objects by name."""
        return self.model.tasks

    def validate(self) -> dict[str, dict[str, float]]:
        """Metrics of the current model on the validation split."""
        return evaluate_model(
            self.model, self.tasks, self.val_set, self.cfg.run.eval_batch_size, self.device
        )


def _short(metrics: dict[str, dict[str, float]]) -> str:
    return " ".join(
        f"{t}:" + ",".join(f"{k}={v:.3f}" for k, v in m.items()) for t, m in metrics.items()
    )
