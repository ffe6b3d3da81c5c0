"""Representation similarity of single-task models, per backbone stage (RSA).

Vandenhende et al., "Branched Multi-Task Networks: Deciding What Layers To Share" (BMVC 2020),
section 3.2, after Dwivedi and Roig's RSA for task taxonomy (CVPR 2019): run each task's
single-task model on the same ``K`` held-out images; at each candidate branch point (here the
end of each backbone stage) build the task's representation dissimilarity matrix (RDM), ``K x
K``, entry ``(a, b)`` = 1 - the Pearson correlation of the flattened features of images ``a``
and ``b``; two tasks' affinity at that point is the Spearman rank correlation of their RDMs'
upper triangles. One symmetric ``T x T`` matrix per stage, diagonal 1. Only the images' relative
geometry is compared, so the features of two models need not live in the same space (or
channel order), and a positive rescaling of a representation changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.analysis.matrices import AffinityMatrix
from training.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

#: Fewer images give an RDM with fewer than 3 pairs: no rank correlation to speak of.
MIN_IMAGES = 3
#: RDM entries are rounded to this many decimals before ranking, so that equal dissimilarities
#: (identical or rescaled representations) tie exactly instead of by rounding noise.
RDM_DECIMALS = 10


def select_images(n: int, k: int) -> list[int]:
    """``min(k, n)`` indices spread evenly over ``0 .. n-1``: the same for every task and run."""
    k = min(k, n)
    return [(i * n) // k for i in range(k)]


def dissimilarity_matrix(features: np.ndarray) -> np.ndarray:
    """The ``K x K`` RDM of ``K`` images' features (any shape after the first axis).

    Entry ``(a, b)`` is ``1 - pearson(features[a], features[b])`` over the flattened features;
    an image whose features are constant has correlation 0 with every other image.
    """
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    x = x - x.mean(axis=1, keepdims=True)
    sq = (x * x).sum(axis=1)
    denom = np.sqrt(np.outer(sq, sq))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, (x @ x.T) / denom, 0.0)
    np.fill_diagonal(corr, 1.0)
    return 1.0 - np.clip(corr, -1.0, 1.0)


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their mean rank (as Spearman's correlation needs)."""
    v = np.asarray(values)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    sorted_v = v[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(v)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0  # the mean of ranks s+1 .. e
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 when either side is constant (no ordering to agree with)."""
    a = a - a.mean()
    b = b - b.mean()
    # sqrt of the product (not a product of sqrts): a == b gives exactly 1
    denom = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.clip(np.dot(a, b) / denom, -1.0, 1.0)) if denom > 0 else 0.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two vectors of equal length."""
    return pearson(rank(a), rank(b))


def rsa_matrix(rdms: Mapping[str, np.ndarray]) -> np.ndarray:
    """``T x T`` Spearman correlations of the RDMs' upper triangles (diagonal exactly 1)."""
    names = list(rdms)
    k = len(next(iter(rdms.values())))
    upper = np.triu_indices(k, 1)
    vecs = [np.round(rdms[t][upper], RDM_DECIMALS) for t in names]
    out = np.eye(len(names))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            out[i, j] = out[j, i] = spearman(vecs[i], vecs[j])
    return out


def rsa_affinity(
    features: Mapping[str, Sequence[np.ndarray]], auxiliary: frozenset[str] = frozenset()
) -> list[AffinityMatrix]:
    """One RSA affinity per stage from each task's per-stage features (``K`` images each).

    Args:
        features: ``{task: [stage_0, stage_1, ...]}``, each ``[K, ...]`` over the same images.
        auxiliary: Which of the tasks are auxiliary (carried along, not treated differently).
    """
    rdms = {t: [dissimilarity_matrix(f) for f in stages] for t, stages in features.items()}
    return rsa_from_rdms(rdms, auxiliary)


def rsa_from_rdms(
    rdms: Mapping[str, Sequence[np.ndarray]], auxiliary: frozenset[str] = frozenset()
) -> list[AffinityMatrix]:
    """One RSA affinity per stage from each task's per-stage RDMs."""
    tasks = tuple(rdms)
    stages = {len(r) for r in rdms.values()}
    if len(stages) != 1:
        raise ValueError(f"every task needs the same number of stages, got {sorted(stages)}")
    return [
        AffinityMatrix(tasks, rsa_matrix({t: rdms[t][s] for t in tasks}), auxiliary & set(tasks))
        for s in range(stages.pop())
    ]


@dataclass(frozen=True)
class LayerAffinity:
    """RSA affinity at the end of each backbone stage, and what it was measured on."""

    stages: list[AffinityMatrix]  # stage 0 (finest) .. 3
    image_ids: list[str]
    split: str
    baselines: dict[str, Path]

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks measured (those with a single-task baseline)."""
        return self.stages[0].tasks

    def mean(self) -> AffinityMatrix:
        """The affinity averaged over stages."""
        first = self.stages[0]
        return AffinityMatrix(
            first.tasks, np.mean([a.matrix for a in self.stages], axis=0), first.auxiliary
        )


@torch.no_grad()
def stage_features(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int = 16
) -> list[np.ndarray]:
    """The backbone's output at the end of each stage, ``[K, C, H, W]`` float32 per stage."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise CheckpointError(f"{type(model).__name__} has no single backbone to compare")
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(images), batch_size):
        feats = backbone(images[start : start + batch_size])
        chunks.append([f.float().cpu().numpy() for f in feats])
    return [np.concatenate(stage) for stage in zip(*chunks, strict=True)]


def measure_rsa(
    baselines: Mapping[str, Path],
    data: Path | None,
    split: str,
    images: int,
    auxiliary: frozenset[str] = frozenset(),
) -> LayerAffinity:
    """RSA per stage of the single-task models in ``baselines`` (``{task: run_dir}``).

    Every model sees the same images: ``images`` of the split (fewer if it is smaller), spread
    evenly over it, normalised as each model was trained.

    Args:
        baselines: Each task's single-task run directory.
        data: The dataset folder; default, the one the first baseline was trained on.
        split: The split the images come from (held out from training: val by default).
        images: How many images (``K``).
        auxiliary: Which tasks are auxiliary in the multi-task run.

    Raises:
        ConfigError: Fewer than 2 baselines, or fewer than 3 images in the split.
        CheckpointError: A baseline is not a finished run.
    """
    from training.data.folder import FolderDataset
    from training.runs import load_run

    if len(baselines) < 2:
        raise ConfigError(
            f"RSA compares tasks: needs the single-task baselines of at least two, got "
            f"{sorted(baselines) or 'none'}"
        )
    if images < MIN_IMAGES:
        raise ConfigError(f"--images must be at least {MIN_IMAGES}, got {images}")
    rdms: dict[str, list[np.ndarray]] = {}  # K x K each: one model's features at a time
    ids: list[str] | None = None
    for task, path in baselines.items():
        run = load_run(path)
        if task not in {t.name for t in run.tasks}:
            raise ConfigError(f"baseline {path} has no task {task!r}")
        root = Path(data or run.config.data.root)
        if not root.exists():
            raise ConfigError(f"data folder not found: {root} (pass --data)")
        cfg = run.config.data
        dataset = FolderDataset(root, split, [], None, cfg.mean, cfg.std)
        dataset.require_image_size(run.input_size)
        if len(dataset) < MIN_IMAGES:
            raise ConfigError(
                f"split {split!r} of {root} has {len(dataset)} images; RSA needs at least "
                f"{MIN_IMAGES} (pass --split with a larger one)"
            )
        picked = select_images(len(dataset), images)
        samples = [dataset[i] for i in picked]
        batch_ids = [s["id"] for s in samples]
        if ids is not None and batch_ids != ids:
            raise ConfigError(f"baseline {path} reads other images than the first baseline")
        ids = batch_ids
        log.info("RSA: features of %s's single-task model on %d images", task, len(samples))
        feats = stage_features(run.model(), torch.stack([s["image"] for s in samples]))
        rdms[task] = [dissimilarity_matrix(f) for f in feats]
    assert ids is not None
    return LayerAffinity(rsa_from_rdms(rdms, auxiliary), ids, split, dict(baselines))
