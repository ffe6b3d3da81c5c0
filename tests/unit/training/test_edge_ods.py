"""ODS-F for edges: thinning, the matching tolerance, the best threshold over the dataset."""

import torch

from training.tasks.edges import MAX_DIST, EdgeODS, edge_nms, within

H = W = 128


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.clamp(1e-4, 1 - 1e-4))


def _square(offset: int = 0) -> torch.Tensor:
    """The outline of a square, one pixel wide, shifted by ``offset`` right and down."""
    t = torch.zeros(1, 1, H, W)
    a, b = 30 + offset, 90 + offset
    t[..., a, a:b] = 1
    t[..., b, a:b] = 1
    t[..., a:b, a] = 1
    t[..., a : b + 1, b] = 1
    return t


def _ods(pred_prob: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    m = EdgeODS()
    m.update(_logit(pred_prob), target)
    return m.compute()


def test_exact_edges_score_one():
    t = _square()
    scores = _ods(t * 0.9, t)
    assert scores["ods_f"] > 0.99 and scores["f1"] > 0.99


def test_a_one_pixel_shift_is_within_the_tolerance():
    radius = max(1, round(MAX_DIST * (H * H + W * W) ** 0.5))
    assert radius == 1  # 0.0075 of a 181-pixel diagonal
    t = _square()
    scores = _ods(_square(offset=1) * 0.9, t)
    assert scores["ods_f"] > 0.97  # pixel-exact matching gives far less:
    assert scores["f1"] < 0.6
    far = _ods(_square(offset=4) * 0.9, t)
    assert far["ods_f"] < 0.4  # beyond the tolerance, misses


def test_thick_blurred_edges_are_thinned_before_matching():
    t = _square()
    blurred = torch.nn.functional.avg_pool2d(
        torch.nn.functional.max_pool2d(t, 5, stride=1, padding=2), 5, stride=1, padding=2
    )  # a band about 9 pixels wide, brightest on the edge
    thin = edge_nms(blurred[:, 0])
    assert (thin > 0.05).sum() < 0.4 * (blurred > 0.05).sum()
    assert _ods(blurred, t)["ods_f"] > 0.8
    # without thinning, the band's pixels would mostly be false positives at any threshold
    band = blurred > 0.05
    precision_of_band = float((band & within(t[:, 0] > 0.5, 1)).sum() / band.sum())
    assert precision_of_band < 0.5


def test_the_threshold_is_one_for_the_whole_dataset():
    t = _square()
    m = EdgeODS()
    m.update(_logit(t * 0.3), t)  # right at thresholds below 0.3
    m.update(_logit(torch.full_like(t, 0.25)), torch.zeros_like(t))  # no edges; 0.25 everywhere
    scores = m.compute()
    # one threshold for both images: one between 0.25 and 0.3 keeps image 1 and drops image 2
    assert scores["ods_f"] > 0.99
    lone = EdgeODS()
    lone.update(_logit(torch.full_like(t, 0.25)), torch.zeros_like(t))
    lone.update(_logit(t * 0.2), t)  # now image 1 is right only below 0.2: no threshold is both
    assert lone.compute()["ods_f"] < 0.1


def test_noise_scores_low():
    torch.manual_seed(0)
    t = _square()
    assert _ods(torch.rand(1, 1, H, W), t)["ods_f"] < 0.3
