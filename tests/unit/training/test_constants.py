"""Constant predictors: each kind's best constant, measured by the models' own metric code."""

import json

import numpy as np
import pytest
import torch

from training.constants import constant_predictor, fit_constant, fit_constants, shortfalls
from training.data.synth import write_dataset
from training.evaluate import evaluate_predictor
from training.tasks import build_task

SIZE = 8
TASKS = [
    build_task("seg", "segmentation", ("a", "b", "c")),
    build_task("depth", "depth"),
    build_task("normals", "normals"),
    build_task("edges", "edges"),
    build_task("sal", "saliency"),
    build_task("tags", "multilabel", ("x", "y")),
    build_task("cls", "classification", ("p", "q", "r")),
]


def _sample(rng: np.random.Generator, cls: int, tags: list[float]) -> dict:
    seg = torch.from_numpy(rng.choice([0, 1, 1, 1, 2, 255], (SIZE, SIZE))).long()
    depth = torch.from_numpy(rng.uniform(1.0, 9.0, (1, SIZE, SIZE))).float()
    depth[0, 0, :3] = 0.0  # invalid pixels, left out of the fit and the metric
    normals = torch.nn.functional.normalize(
        torch.from_numpy(rng.normal(0, 1, (3, SIZE, SIZE))).float()
        + torch.tensor([0, 0, -2.0])[:, None, None],
        dim=0,
    )
    edges = torch.from_numpy(rng.random((1, SIZE, SIZE)) < 0.15).float()
    sal = torch.from_numpy(rng.random((1, SIZE, SIZE)) < 0.3).float()
    targets = {
        "seg": seg,
        "depth": depth,
        "normals": normals,
        "edges": edges,
        "sal": sal,
        "tags": torch.tensor(tags),
        "cls": torch.tensor(cls),
    }
    return {"image": torch.zeros(3, SIZE, SIZE), "targets": targets}


def _split(seed: int, classes: list[int], tags: list[list[float]]) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [_sample(rng, c, t) for c, t in zip(classes, tags, strict=True)]


TRAIN = _split(0, [2, 2, 0, 2, 1, 2], [[1, 0], [1, 0], [1, 1], [0, 0], [1, 0], [1, 0]])
TEST = _split(1, [0, 2, 1, 2, 2], [[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]])


def _stack(split: list[dict], task: str) -> torch.Tensor:
    return torch.stack([s["targets"][task] for s in split])


@pytest.fixture(scope="module")
def constant_metrics():
    outputs = {t.name: fit_constant(t, TRAIN, batch_size=4) for t in TASKS}
    return outputs, evaluate_predictor(constant_predictor(TASKS, outputs), TASKS, TEST, 2)


def test_segmentation_predicts_the_most_frequent_class_everywhere(constant_metrics):
    outputs, metrics = constant_metrics
    train = _stack(TRAIN, "seg")
    counts = [int((train == c).sum()) for c in range(3)]
    assert int(outputs["seg"].argmax()) == counts.index(max(counts)) == 1
    test = _stack(TEST, "seg")
    labelled = test != 255
    share = float((test == 1).sum() / labelled.sum())
    present = len({int(c) for c in test[labelled].unique()})
    assert metrics["seg"]["pixel_acc"] == pytest.approx(share)
    # one class predicted everywhere: its IoU is its share, every other present class scores 0
    assert metrics["seg"]["miou"] == pytest.approx(share / present)


def test_depth_predicts_the_mean_valid_training_depth(constant_metrics):
    outputs, metrics = constant_metrics
    train = _stack(TRAIN, "depth").double()
    mean = float(train[train > 0].mean())
    assert float(outputs["depth"]) == pytest.approx(mean)
    test = _stack(TEST, "depth").double()
    t = test[test > 0]
    assert metrics["depth"]["rmse"] == pytest.approx(float(((t - mean) ** 2).mean().sqrt()))
    assert metrics["depth"]["abs_rel"] == pytest.approx(float(((t - mean).abs() / t).mean()))


def test_normals_predict_the_normalised_mean_normal(constant_metrics):
    outputs, metrics = constant_metrics
    mean = _stack(TRAIN, "normals").double().sum(dim=(0, 2, 3))
    mean /= mean.norm()
    assert torch.allclose(outputs["normals"].double(), mean, atol=1e-6)
    test = _stack(TEST, "normals").double().permute(0, 2, 3, 1).reshape(-1, 3)
    angles = torch.rad2deg(torch.acos((test @ mean).clamp(-1, 1)))
    assert metrics["normals"]["mean_angle"] == pytest.approx(float(angles.mean()), abs=1e-4)


def _near_an_edge_share(edges: torch.Tensor) -> float:
    """Share of pixels with a target edge pixel within one pixel (a radius-1 disc)."""
    e = edges[:, 0].numpy() > 0.5
    near = e.copy()
    near[:, :, 1:] |= e[:, :, :-1]
    near[:, :, :-1] |= e[:, :, 1:]
    near[:, 1:, :] |= e[:, :-1, :]
    near[:, :-1, :] |= e[:, 1:, :]
    return float(near.mean())


def test_edges_predict_the_training_edge_rate(constant_metrics):
    outputs, metrics = constant_metrics
    rate = float(_stack(TRAIN, "edges").mean())
    assert float(torch.sigmoid(outputs["edges"])) == pytest.approx(rate, abs=1e-6)
    # every threshold below the constant calls every pixel an edge: recall 1, precision the
    # share of pixels within the tolerance (1 pixel at 8x8) of a target edge
    precision = _near_an_edge_share(_stack(TEST, "edges"))
    assert metrics["edges"]["ods_f"] == pytest.approx(2 * precision / (1 + precision))
    assert metrics["edges"]["f1"] == 0.0  # the rate is under 0.5: nothing is an edge there


def test_a_rate_outside_the_thresholds_is_moved_inside():
    none = [torch.zeros(2, 1, SIZE, SIZE)]
    assert 0.01 < float(torch.sigmoid(TASKS[3].constant_output(none))) < 0.02


def test_saliency_predicts_the_salient_share(constant_metrics):
    _, metrics = constant_metrics
    p = float(_stack(TEST, "sal").mean())
    assert metrics["sal"]["max_f"] == pytest.approx(1.3 * p / (0.3 * p + 1))


def test_multilabel_scores_each_label_by_its_training_frequency(constant_metrics):
    outputs, metrics = constant_metrics
    assert torch.sigmoid(outputs["tags"]).tolist() == pytest.approx([5 / 6, 1 / 6], abs=1e-5)
    test = _stack(TEST, "tags")
    # ties: the ranking is the split's order; AP = mean precision at each positive
    aps = []
    for c in range(2):
        hits = test[:, c].tolist()
        at = [sum(hits[: k + 1]) / (k + 1) for k, h in enumerate(hits) if h]
        aps.append(sum(at) / len(at))
    assert metrics["tags"]["map"] == pytest.approx(sum(aps) / 2)
    # at 0.5 label x (5/6) is predicted for every image, label y (1/6) for none
    tp, fp = float(test[:, 0].sum()), float((1 - test[:, 0]).sum())
    fn = float(test[:, 1].sum())
    assert metrics["tags"]["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_classification_predicts_the_training_prior(constant_metrics):
    outputs, metrics = constant_metrics
    assert torch.softmax(outputs["cls"], 0).tolist() == pytest.approx([1 / 6, 1 / 6, 4 / 6])
    assert metrics["cls"]["top1"] == pytest.approx(3 / 5)  # class r: 3 of the 5 test images


def _oracle(split: list[dict]):
    """Predicts each image's own targets as raw outputs (the split is evaluated in order)."""
    seen = [0]

    def predict(images: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = split[seen[0] : seen[0] + images.shape[0]]
        seen[0] += images.shape[0]
        t = {name: torch.stack([s["targets"][name] for s in batch]) for name in batch[0]["targets"]}
        seg = t["seg"].clone()
        seg[seg == 255] = 0
        return {
            "seg": torch.nn.functional.one_hot(seg, 3).permute(0, 3, 1, 2).float(),
            "depth": t["depth"],
            "normals": t["normals"],
            "edges": t["edges"] * 20 - 10,
            "sal": t["sal"] * 20 - 10,
            "tags": t["tags"] * 20 - 10,
            "cls": torch.nn.functional.one_hot(t["cls"], 3).float(),
        }

    return predict


def test_an_oracle_beats_the_constant_on_every_task_and_the_constant_does_not(constant_metrics):
    _, constant = constant_metrics
    oracle = evaluate_predictor(_oracle(TEST), TASKS, TEST, 2)
    assert shortfalls(oracle, constant, TASKS) == []
    assert [s.task for s in shortfalls(constant, constant, TASKS)] == [t.name for t in TASKS]


def test_a_worse_depth_is_named_with_its_metric_and_both_values(constant_metrics):
    outputs, constant = constant_metrics
    worse = constant_predictor(TASKS, {**outputs, "depth": outputs["depth"] + 3.0})
    oracle_but_depth = {**evaluate_predictor(_oracle(TEST), TASKS, TEST, 2)}
    oracle_but_depth["depth"] = evaluate_predictor(worse, TASKS, TEST, 2)["depth"]
    (short,) = shortfalls(oracle_but_depth, constant, TASKS)
    assert (short.task, short.metric) == ("depth", "rmse")
    assert short.value > short.constant
    assert str(short).startswith("depth rmse ") and "(constant " in str(short)


def test_fit_on_a_dataset_folder_reads_the_training_split(tmp_path):
    root = write_dataset(tmp_path / "d", n=10, size=16, seed=3)
    tasks = [
        build_task("depth", "depth"),
        build_task("background", "classification", ("stripes", "checker", "noise", "gradient")),
    ]
    outputs = fit_constants(tasks, root)
    ids = (root / "splits" / "train.txt").read_text().split()
    depths = np.concatenate([np.load(root / "depth" / f"{i}.npy").ravel() for i in ids])
    assert float(outputs["depth"]) == pytest.approx(float(depths.astype(np.float64).mean()))
    labels = json.loads((root / "labels.json").read_text())
    counts = [sum(labels[i]["background"] == b for i in ids) for b in tasks[1].labels]
    shares = [max(c, 0.5) / len(ids) for c in counts]  # an unseen class counts as half an image
    assert torch.exp(outputs["background"]).tolist() == pytest.approx(shares)


def test_a_missing_constant_is_refused():
    with pytest.raises(ValueError, match="no constant for task"):
        constant_predictor(TASKS, {})
