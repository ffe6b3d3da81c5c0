import json

import numpy as np
import pytest
import torch
from PIL import Image

from training.data.folder import DatasetError, FolderDataset
from training.data.synth import write_dataset
from training.data.transforms import (
    ColorJitter,
    Compose,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds") / "d", n=10, size=32, seed=1)


def test_every_kind_has_its_tensor_form(root):
    ds = FolderDataset(root, "train")
    s = ds[0]
    t = s["targets"]
    assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
    assert t["semseg"].shape == (32, 32) and t["semseg"].dtype == torch.int64
    assert t["depth"].shape == (1, 32, 32) and (t["depth"] > 0).all()
    assert t["normals"].shape == (3, 32, 32)
    assert torch.allclose(t["normals"].norm(dim=0), torch.ones(32, 32), atol=1e-3)
    assert t["edges"].shape == (1, 32, 32) and set(t["edges"].unique().tolist()) <= {0.0, 1.0}
    assert t["shapes"].shape == (4,) and t["shapes"].dtype == torch.float32
    assert t["background"].shape == () and t["background"].dtype == torch.int64


def test_image_is_normalised_with_mean_and_std(root):
    ds = FolderDataset(root, "val", ["depth"], mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    raw = np.asarray(Image.open(root / "images" / f"{ds.ids[0]}.png"), np.float32) / 255
    expected = (raw.transpose(2, 0, 1) - 0.5) / 0.5
    assert np.allclose(ds[0]["image"].numpy(), expected, atol=1e-6)


def test_subset_of_tasks(root):
    ds = FolderDataset(root, "test", ["depth", "background"])
    assert set(ds[0]["targets"]) == {"depth", "background"}


def test_unknown_task_lists_available(root):
    with pytest.raises(
        DatasetError, match=r"no task\(s\) \['nope'\]; available: \['background', 'depth'"
    ):
        FolderDataset(root, "train", ["nope"])


def test_missing_things_name_the_path(root, tmp_path):
    with pytest.raises(DatasetError, match=r"dataset folder not found: .*nowhere"):
        FolderDataset(tmp_path / "nowhere", "train")
    with pytest.raises(DatasetError, match="split 'dev' not found"):
        FolderDataset(root, "dev")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dataset.json").write_text(
        json.dumps({"tasks": {"x": {"kind": "depth"}}, "image_size": [4, 4]})
    )
    (broken / "splits").mkdir()
    (broken / "splits" / "train.txt").write_text("a\n")
    with pytest.raises(DatasetError, match="task 'x': folder not found"):
        FolderDataset(broken, "train")


def test_depth_as_16_bit_png(root, tmp_path):
    import shutil

    copy = tmp_path / "png16"
    shutil.copytree(root, copy)
    meta = json.loads((copy / "dataset.json").read_text())
    meta["depth_scale"] = 1000.0
    (copy / "dataset.json").write_text(json.dumps(meta))
    for npy in (copy / "depth").glob("*.npy"):
        d = np.load(npy)
        Image.fromarray(np.round(d * 1000).astype(np.uint16)).save(npy.with_suffix(".png"))
        npy.unlink()
    a = FolderDataset(root, "train", ["depth"])[0]["targets"]["depth"]
    b = FolderDataset(copy, "train", ["depth"])[0]["targets"]["depth"]
    assert torch.allclose(a, b, atol=1e-3)


def dense_sample(root):
    ds = FolderDataset(root, "train", ["semseg", "depth", "normals", "edges"])
    captured = {}

    def grab(sample):
        captured.update(sample)
        return sample

    ds.transform = grab
    ds[0]
    return captured


def test_flip_twice_is_identity_and_negates_normal_x(root):
    s = dense_sample(root)
    flip = RandomHorizontalFlip(p=1.0, rng=np.random.default_rng(0))
    once = flip(s)
    assert np.allclose(once["normals"][..., 0], -s["normals"][:, ::-1, 0])
    assert np.allclose(once["normals"][..., 1:], s["normals"][:, ::-1, 1:])
    assert np.array_equal(once["semseg"], s["semseg"][:, ::-1])
    twice = flip(once)
    for k in ("image", "semseg", "depth", "normals", "edges"):
        assert np.array_equal(twice[k], s[k]), k


def test_scale_crop_uses_nearest_neighbour_for_labels(root):
    s = dense_sample(root)
    out = RandomScaleCrop(scale=(1.3, 1.6), rng=np.random.default_rng(0))(s)
    for k in ("semseg", "depth", "edges"):
        assert out[k].shape == s[k].shape
        assert set(np.unique(out[k])) <= set(np.unique(s[k])), k
    assert out["image"].shape == s["image"].shape


def test_resize_and_jitter(root):
    s = dense_sample(root)
    out = Compose([Resize((16, 24)), ColorJitter(0.3, 0.3, np.random.default_rng(1))])(s)
    assert out["image"].shape == (16, 24, 3) and out["semseg"].shape == (16, 24)
    assert np.array_equal(out["normals"].shape, (16, 24, 3))
    assert set(np.unique(out["semseg"])) <= set(np.unique(s["semseg"]))


def test_scale_crop_keeps_normals_as_they_were(root):
    s = dense_sample(root)
    out = RandomScaleCrop(scale=(1.3, 1.6), rng=np.random.default_rng(2))(s)
    before = {tuple(v) for v in s["normals"].reshape(-1, 3)}
    assert {tuple(v) for v in out["normals"].reshape(-1, 3)} <= before
    assert out["normals"].shape == s["normals"].shape


def test_default_draws_follow_the_torch_seed_of_the_process(root):
    s = dense_sample(root)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        jitter = ColorJitter(0.5, 0.5)
        a = jitter(s)["image"]
        torch.manual_seed(2)  # as in another DataLoader worker
        b = jitter(s)["image"]
        torch.manual_seed(1)
        c = ColorJitter(0.5, 0.5)(s)["image"]
    assert not np.array_equal(a, b)
    assert np.array_equal(a, c)


def test_dataset_error_is_a_training_error_and_a_value_error():
    from training.errors import PolyheadTrainingError

    assert issubclass(DatasetError, PolyheadTrainingError) and issubclass(DatasetError, ValueError)


def copy_of(root, tmp_path):
    import shutil

    return shutil.copytree(root, tmp_path / "copy")


def test_malformed_dataset_json_names_the_file(root, tmp_path):
    copy = copy_of(root, tmp_path)
    (copy / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"dataset\.json: not readable JSON"):
        FolderDataset(copy, "train")
    (copy / "dataset.json").write_text(json.dumps({"format": "polyhead-dataset/2"}))
    with pytest.raises(DatasetError, match="format 'polyhead-dataset/2' not supported"):
        FolderDataset(copy, "train")
    (copy / "dataset.json").write_text(json.dumps({"tasks": {}}))
    with pytest.raises(DatasetError, match=r"dataset\.json: malformed \(KeyError: 'image_size'\)"):
        FolderDataset(copy, "train")
    (copy / "dataset.json").unlink()
    with pytest.raises(DatasetError, match=r"no dataset\.json"):
        FolderDataset(copy, "train")


def test_bad_labels_and_mismatched_maps_name_the_file(root, tmp_path):
    copy = copy_of(root, tmp_path)
    ds = FolderDataset(copy, "train", ["background", "semseg"])
    sid = ds.ids[0]
    labels = json.loads((copy / "labels.json").read_text())
    labels[sid]["background"] = "polka"
    (copy / "labels.json").write_text(json.dumps(labels))
    ds = FolderDataset(copy, "train", ["background"])
    with pytest.raises(DatasetError, match=rf"labels\.json: {sid}\.background: 'polka' is not in"):
        ds[0]
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(copy / "semseg" / f"{sid}.png")
    with pytest.raises(DatasetError, match=rf"semseg/{sid}: size \(8, 8\) differs"):
        FolderDataset(copy, "train", ["semseg"])[0]
    (copy / "depth" / f"{sid}.npy").unlink()
    with pytest.raises(DatasetError, match=rf"missing file: .*depth/{sid}\.npy"):
        FolderDataset(copy, "train", ["depth"])[0]
