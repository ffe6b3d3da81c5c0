import numpy as np
import pytest
import torch

from training.tasks import TASK_KINDS, build_task
from training.tasks.multilabel import average_precision

LABELS = ("a", "b", "c")


def make(kind: str):
    return build_task(f"t_{kind}", kind, LABELS)


def perfect_pair(kind: str, n: int = 2, h: int = 8, w: int = 8):
    """Targets and a raw prediction that decodes exactly to them."""
    g = torch.Generator().manual_seed(0)
    if kind == "segmentation":
        t = torch.randint(0, 3, (n, h, w), generator=g)
        return torch.nn.functional.one_hot(t, 3).permute(0, 3, 1, 2).float() * 20, t
    if kind == "depth":
        t = torch.rand(n, 1, h, w, generator=g) + 0.5
        return t.clone(), t
    if kind == "normals":
        t = torch.nn.functional.normalize(torch.randn(n, 3, h, w, generator=g), dim=1)
        return t * 3.0, t  # scale must not matter
    if kind in ("edges", "saliency"):
        t = (torch.rand(n, 1, h, w, generator=g) > 0.8).float()
        return (t * 2 - 1) * 20, t
    if kind == "multilabel":
        t = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
        return (t * 2 - 1) * 20, t
    if kind == "classification":
        t = torch.tensor([2, 0])
        return torch.nn.functional.one_hot(t, 3).float() * 20, t
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", TASK_KINDS.names())
def test_every_kind_has_finite_differentiable_loss(kind):
    task = make(kind)
    pred, target = perfect_pair(kind)
    noisy = (pred + torch.randn_like(pred)).requires_grad_(True)
    loss = task.loss(noisy, target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert noisy.grad is not None and torch.isfinite(noisy.grad).all()


@pytest.mark.parametrize("kind", TASK_KINDS.names())
def test_perfect_prediction_scores_best_on_primary_metric(kind):
    task = make(kind)
    pred, target = perfect_pair(kind)
    m = task.metric()
    m.update(pred, target)
    value = m.compute()[task.primary_metric]
    best = 1.0 if task.higher_is_better[task.primary_metric] else 0.0
    assert value == pytest.approx(best, abs=0.02)
    # and a bad prediction scores worse
    bad = task.metric()
    bad.update(-pred if kind != "depth" else pred * 3, target)
    worse = bad.compute()[task.primary_metric]
    assert (worse < value) if task.higher_is_better[task.primary_metric] else (worse > value)


@pytest.mark.parametrize("kind", TASK_KINDS.names())
def test_every_kind_declares_direction_for_every_metric(kind):
    task = make(kind)
    pred, target = perfect_pair(kind)
    m = task.metric()
    m.update(pred, target)
    assert set(m.compute()) <= set(task.higher_is_better)
    assert task.primary_metric in task.higher_is_better


def test_miou_on_known_confusion():
    task = build_task("s", "segmentation", ("x", "y"))
    target = torch.tensor([[[0, 0, 1, 1]]])
    pred_cls = torch.tensor([[[0, 1, 1, 1]]])
    pred = torch.nn.functional.one_hot(pred_cls, 2).permute(0, 3, 1, 2).float()
    m = task.metric()
    m.update(pred, target)
    out = m.compute()
    # class 0: tp 1, union 2 -> 0.5; class 1: tp 2, union 3 -> 0.667
    assert out["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert out["pixel_acc"] == pytest.approx(0.75)


def test_segmentation_ignores_255():
    task = build_task("s", "segmentation", ("x", "y"))
    target = torch.tensor([[[0, 255]]])
    pred = torch.tensor([[[[5.0, 5.0]], [[0.0, 9.0]]]])  # second pixel predicted class 1
    m = task.metric()
    m.update(pred, target)
    assert m.compute()["pixel_acc"] == 1.0
    assert torch.isfinite(task.loss(pred, target))


def test_depth_metrics_known_values():
    task = build_task("d", "depth")
    target = torch.tensor([[[[1.0, 2.0, 0.0]]]])  # last pixel invalid
    pred = torch.tensor([[[[2.0, 2.0, 100.0]]]])
    m = task.metric()
    m.update(pred, target)
    out = m.compute()
    assert out["rmse"] == pytest.approx((1 / 2) ** 0.5)
    assert out["abs_rel"] == pytest.approx(0.5)
    assert out["log_rmse"] == pytest.approx((np.log(2.0) ** 2 / 2) ** 0.5)
    assert out["delta_1"] == pytest.approx(0.5)  # 2/1 is over 1.25, 2/2 is not


def test_depth_metrics_match_numpy_over_batches():
    g = torch.Generator().manual_seed(0)
    task = build_task("d", "depth")
    m = task.metric()
    ps, ts = [], []
    for _ in range(3):
        t = torch.rand(2, 1, 8, 8, generator=g) * 9 + 1
        t[0, 0, :2] = 0.0  # invalid
        p = t * torch.exp(torch.randn(2, 1, 8, 8, generator=g) * 0.3)
        p[1, 0, 0, 0] = -1.0  # a negative prediction counts as MIN_DEPTH in logs and ratios
        m.update(p, t)
        ps.append(p.numpy().ravel())
        ts.append(t.numpy().ravel())
    p, t = np.concatenate(ps).astype(np.float64), np.concatenate(ts).astype(np.float64)
    valid = t > 0
    p, t = p[valid], t[valid]
    pc = np.maximum(p, 1e-3)
    out = m.compute()
    assert out["rmse"] == pytest.approx(np.sqrt(np.mean((p - t) ** 2)))
    assert out["abs_rel"] == pytest.approx(np.mean(np.abs(p - t) / t))
    assert out["log_rmse"] == pytest.approx(np.sqrt(np.mean((np.log(pc) - np.log(t)) ** 2)))
    assert out["delta_1"] == pytest.approx(np.mean(np.maximum(pc / t, t / pc) < 1.25))


def test_normals_metrics_match_numpy():
    g = torch.Generator().manual_seed(1)
    task = build_task("n", "normals")
    t = torch.nn.functional.normalize(torch.randn(2, 3, 16, 16, generator=g), dim=1)
    p = t + torch.randn(2, 3, 16, 16, generator=g) * 0.4
    t[0, :, 0, :4] = 0.0  # invalid
    m = task.metric()
    m.update(p, t)
    out = m.compute()
    pn = (p / p.norm(dim=1, keepdim=True)).permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    tn = t.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    valid = np.abs(tn).sum(1) > 0
    cos = np.clip((pn[valid] * tn[valid]).sum(1) / np.linalg.norm(tn[valid], axis=1), -1, 1)
    deg = np.degrees(np.arccos(cos))
    assert out["mean_angle"] == pytest.approx(deg.mean(), abs=1e-3)
    assert out["rmse_angle"] == pytest.approx(np.sqrt((deg**2).mean()), abs=1e-3)
    lower_median = np.sort(deg)[int(np.ceil(deg.size / 2)) - 1]  # the histogram's median
    assert out["median_angle"] == pytest.approx(lower_median, abs=0.011)
    for name, angle in (("within_11_25", 11.25), ("within_22_5", 22.5), ("within_30", 30.0)):
        assert out[name] == pytest.approx((deg <= angle).mean(), abs=2 / deg.size)


def test_normals_angle_of_orthogonal_vectors_is_90_degrees():
    task = build_task("n", "normals")
    target = torch.zeros(1, 3, 1, 2)
    target[0, 2] = 1.0
    pred = torch.zeros(1, 3, 1, 2)
    pred[0, 0] = 1.0
    m = task.metric()
    m.update(pred, target)
    out = m.compute()
    assert out["mean_angle"] == pytest.approx(90.0, abs=0.01)
    assert out["median_angle"] == pytest.approx(90.0, abs=0.01)


def test_average_precision_known_ranking():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    positives = torch.tensor([True, False, True, False])
    # precision at the positives: 1/1 and 2/3
    assert average_precision(scores, positives) == pytest.approx((1 + 2 / 3) / 2)


def test_unknown_kind_lists_valid_ones():
    with pytest.raises(KeyError, match="valid: classification, depth"):
        build_task("x", "segmentatoin")


def test_labelled_kinds_need_labels():
    with pytest.raises(ValueError, match="needs class labels"):
        build_task("x", "segmentation", None)
