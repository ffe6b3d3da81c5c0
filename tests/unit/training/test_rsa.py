"""RSA affinity (Vandenhende et al. 2020): RDMs of 1 - Pearson, compared by Spearman."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from training.analysis.rsa import (
    dissimilarity_matrix,
    rank,
    rsa_affinity,
    select_images,
    spearman,
    stage_features,
)


def features(seed: int, k: int = 100, d: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(k, d))


def affinity(a: np.ndarray, b: np.ndarray) -> float:
    """RSA affinity of two tasks' representations at one stage."""
    return float(rsa_affinity({"a": [a], "b": [b]})[0].matrix[0, 1])


def test_identical_representations_have_affinity_exactly_one():
    f = features(0)
    stage = rsa_affinity({"a": [f], "b": [f.copy()], "c": [features(1)]})[0]
    assert stage.matrix[0, 1] == 1.0 and stage.matrix[1, 0] == 1.0
    assert np.all(np.diag(stage.matrix) == 1.0)
    np.testing.assert_array_equal(stage.matrix, stage.matrix.T)


@pytest.mark.parametrize("seed", range(5))
def test_independent_random_representations_are_near_zero(seed):
    assert abs(affinity(features(2 * seed), features(2 * seed + 1))) < 0.1


@pytest.mark.parametrize("scale", [1e-3, 0.5, 3.7, 1e4])
def test_a_positive_scaling_changes_nothing(scale):
    f, g = features(3), features(4)
    assert affinity(f, scale * f) == pytest.approx(1.0, abs=1e-9)
    assert affinity(scale * f, g) == pytest.approx(affinity(f, g), abs=1e-9)


def test_sharing_more_content_ranks_higher():
    rng = np.random.default_rng(5)
    common = rng.normal(size=(100, 64))
    base = np.concatenate([common, rng.normal(size=(100, 64))], axis=1)
    # the other task shares a growing part of the first one's features
    scores = []
    for shared in (0, 16, 32, 48, 64):
        other = rng.normal(size=(100, 128))
        other[:, :shared] = common[:, :shared]
        scores.append(affinity(base, other))
    half = scores[2]
    assert abs(scores[0]) < 0.1 < half < affinity(base, base) == 1.0
    assert scores == sorted(scores), scores


def test_the_rdm_is_one_minus_the_pearson_correlation_between_images():
    f = features(6, k=12, d=5).reshape(12, 5, 1, 1)  # feature maps are flattened
    expected = 1 - np.corrcoef(f.reshape(12, -1))
    np.testing.assert_allclose(dissimilarity_matrix(f), expected, atol=1e-12)


def test_an_image_with_constant_features_is_uncorrelated_not_nan():
    f = features(7, k=6, d=8)
    f[2] = 3.0
    rdm = dissimilarity_matrix(f)
    assert np.isfinite(rdm).all()
    assert rdm[2, 2] == 0.0 and all(rdm[2, j] == 1.0 for j in range(6) if j != 2)


def test_spearman_gives_ties_their_mean_rank():
    np.testing.assert_array_equal(rank(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    a, b = np.array([1.0, 2.0, 2.0, 5.0, 4.0]), np.array([2.0, 1.0, 4.0, 4.0, 9.0])
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic)
    assert spearman(a, np.ones(5)) == 0.0  # no order to agree with


@pytest.mark.parametrize("seed", range(5))
def test_spearman_and_the_rdm_agree_with_scipy(seed):
    """The reference: scipy's spearmanr on rounded values (ties) and 1 - corrcoef for the RDM."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 8, 200).astype(float), rng.integers(0, 8, 200).astype(float)
    b = b + 0.5 * a
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
    feats = rng.standard_normal((12, 4, 3, 3))
    want = 1 - np.corrcoef(feats.reshape(12, -1))
    np.testing.assert_allclose(dissimilarity_matrix(feats), want, atol=1e-12)


def test_images_are_spread_evenly_and_the_same_every_time():
    assert select_images(10, 5) == [0, 2, 4, 6, 8] == select_images(10, 5)
    assert select_images(4, 100) == [0, 1, 2, 3]
    picked = select_images(1000, 100)
    assert len(set(picked)) == 100 and picked[0] == 0 and picked[-1] == 990


def test_every_stage_gets_its_own_matrix():
    f = [features(8, k=20), features(9, k=20)]
    stages = rsa_affinity({"a": f, "b": [f[0], features(10, k=20)]}, frozenset({"b"}))
    assert len(stages) == 2
    assert stages[0].matrix[0, 1] == 1.0 and abs(stages[1].matrix[0, 1]) < 0.5
    assert stages[0].auxiliary == frozenset({"b"})


def test_stage_features_are_the_backbones_four_maps():
    from training.models import ARCHITECTURES, build_backbone
    from training.tasks import build_task

    torch.manual_seed(0)
    model = ARCHITECTURES.get("single_task")(
        build_backbone("resnet18", 4), [build_task("depth", "depth")], neck_channels=8
    ).eval()
    maps = stage_features(model, torch.randn(5, 3, 32, 32), batch_size=2)
    assert [m.shape for m in maps] == [(5, 4, 8, 8), (5, 8, 4, 4), (5, 16, 2, 2), (5, 32, 1, 1)]
    assert all(m.dtype == np.float32 for m in maps)
