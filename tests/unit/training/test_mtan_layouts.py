"""NYUv2-13 and Cityscapes-7 in lorenmt/mtan's ``.npy`` layout: converter, checks and configs.

Every fixture is a tiny dataset written here exactly as the papers' loaders read it:
``{train,val}/image/{i}.npy`` H,W,3 float in [0, 1], ``label/`` (``label_7/``) H,W float with
-1 = ignore, ``depth/`` H,W,1 float with 0 = invalid, ``normal/`` H,W,3 with zero = invalid.
"""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.config import load_config
from training.data.convert import convert
from training.data.folder import DatasetError, FolderDataset, read_dataset_info
from training.data.mtan import CITYSCAPES_CLASSES, NYUV2_CLASSES

ROOT = Path(__file__).resolve().parents[3]
NYU_HW, CITY_HW = (24, 32), (16, 32)  # the papers' 288x384 and 128x256, scaled down
N_TRAIN, N_VAL = 3, 2


def unit_normals(rng, hw):
    n = rng.normal(size=(*hw, 3))
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def make_mtan(root, kind, hw, n_train=N_TRAIN, n_val=N_VAL):
    """Write an mtan-layout dataset; returns {(split, i): {folder: array as saved}}."""
    label_folder, n_classes = ("label", 13) if kind == "nyuv2" else ("label_7", 7)
    folders = ["image", label_folder, "depth"] + (["normal"] if kind == "nyuv2" else [])
    truth = {}
    for split, n in (("train", n_train), ("val", n_val)):
        for f in folders:
            (root / split / f).mkdir(parents=True)
        for i in range(n):
            rng = np.random.default_rng(100 * (split == "val") + i)
            # float64 for some samples, float32 for others: the loaders accept both
            ftype = np.float64 if i % 2 == 0 else np.float32
            arrays = {"image": (rng.integers(0, 256, (*hw, 3)) / 255.0).astype(ftype)}
            label = rng.integers(0, n_classes, hw).astype(ftype)
            label[0, :3] = (-1, 0, n_classes - 1)  # ignore, first and last class
            label[rng.random(hw) < 0.1] = -1
            arrays[label_folder] = label
            high = 10.0 if kind == "nyuv2" else 0.49  # metres; mtan's inverse-depth range
            depth = rng.uniform(0.01, high, (*hw, 1)).astype(np.float32)
            depth[1, 1] = 0.0
            depth[rng.random(hw) < 0.2] = 0.0  # invalid
            arrays["depth"] = depth
            if kind == "nyuv2":
                normal = unit_normals(rng, hw).astype(np.float32)
                normal[2, 2] = 0.0
                normal[rng.random(hw) < 0.1] = 0.0  # invalid
                arrays["normal"] = normal
            for f, a in arrays.items():
                np.save(root / split / f / f"{i}.npy", a)
            truth[(split, i)] = arrays
    return truth


def split_ids(root, split):
    return (root / "splits" / f"{split}.txt").read_text().split()


def check_common(out, truth, label_folder):
    """Splits, image bytes and labels of every sample, against the source arrays."""
    assert split_ids(out, "train") == [f"train_{i}" for i in range(N_TRAIN)]
    assert split_ids(out, "val") == split_ids(out, "test") == [f"val_{i}" for i in range(N_VAL)]
    for (split, i), src in truth.items():
        sid = f"{split}_{i}"
        with Image.open(out / "images" / f"{sid}.png") as im:
            assert im.mode == "RGB"
            image = np.asarray(im)
        assert np.array_equal(image, np.rint(src["image"].astype(np.float64) * 255))
        with Image.open(out / "semseg" / f"{sid}.png") as im:
            seg = np.asarray(im)
        expected = np.where(src[label_folder] == -1, 255, src[label_folder]).astype(np.uint8)
        assert np.array_equal(seg, expected)
        assert (seg == 255).sum() == (src[label_folder] == -1).sum() > 0


@pytest.fixture
def nyuv2(tmp_path):
    truth = make_mtan(tmp_path / "nyuv2", "nyuv2", NYU_HW)
    return tmp_path / "nyuv2", truth


@pytest.fixture
def cityscapes(tmp_path):
    truth = make_mtan(tmp_path / "cityscapes", "cityscapes", CITY_HW)
    return tmp_path / "cityscapes", truth


# ------------------------------------------------------------------------------------ NYUv2


def test_nyuv2_converts_sample_by_sample(nyuv2, tmp_path):
    src, truth = nyuv2
    out = convert("nyuv2_mtan", src, tmp_path / "out")  # what `polyhead data convert` calls

    tasks, size = read_dataset_info(out)
    assert size == NYU_HW
    assert {t: i.kind for t, i in tasks.items()} == {
        "semseg": "segmentation",
        "depth": "depth",
        "normals": "normals",
    }
    assert tasks["semseg"].labels == NYUV2_CLASSES and len(NYUV2_CLASSES) == 13
    assert tasks["semseg"].labels[0] == "bed" and tasks["semseg"].labels[-1] == "window"
    assert tasks["semseg"].ignore_index == 255 and tasks["depth"].units == "m"
    check_common(out, truth, "label")

    for (split, i), a in truth.items():
        sid = f"{split}_{i}"
        depth = np.load(out / "depth" / f"{sid}.npy")
        assert depth.dtype == np.float32
        assert np.array_equal(depth, a["depth"][..., 0])  # metres, zeros kept
        with Image.open(out / "normals" / f"{sid}.png") as im:
            code = np.asarray(im)
        invalid = ~a["normal"].any(axis=-1)
        assert invalid.sum() > 0 and (code[invalid] == 0).all()
        assert np.abs(code[~invalid] - normal_code(a["normal"][~invalid])).max() <= 1

        ds = FolderDataset(out, split)
        t = ds[ds.ids.index(sid)]["targets"]
        assert np.array_equal(t["depth"][0].numpy(), a["depth"][..., 0])
        n = t["normals"].numpy().transpose(1, 2, 0)
        assert (n[invalid] == 0).all()
        assert np.abs(n[~invalid] - a["normal"][~invalid]).max() < 0.02  # 8-bit encoding


def normal_code(n):
    """The 8-bit code a unit normal is stored as: round((n + 1) * 127.5)."""
    return np.clip(np.rint((n.astype(np.float64) + 1) * 127.5), 1, 255)


def test_nyuv2_normals_are_made_unit_length_before_encoding(nyuv2, tmp_path):
    src, truth = nyuv2
    unit = truth[("train", 0)]["normal"]
    np.save(src / "train" / "normal" / "0.npy", unit * 0.5)  # short, as bilinear resizing leaves
    out = convert("nyuv2_mtan", src, tmp_path / "out")
    with Image.open(out / "normals" / "train_0.png") as im:
        code = np.asarray(im).astype(np.float64)
    valid = unit.any(axis=-1)
    assert np.abs(code[valid] - normal_code(unit[valid])).max() <= 1
    assert (code[~valid] == 0).all()


def test_image_values_round_to_the_nearest_byte(nyuv2, tmp_path):
    src, truth = nyuv2
    k = np.rint(truth[("train", 1)]["image"].astype(np.float64) * 255)
    np.save(src / "train" / "image" / "1.npy", np.maximum(k - 0.3, 0) / 255)  # below k/255
    out = convert("nyuv2_mtan", src, tmp_path / "out")
    with Image.open(out / "images" / "train_1.png") as im:
        assert np.array_equal(np.asarray(im), k)


# -------------------------------------------------------------------------------- Cityscapes


def test_cityscapes_converts_sample_by_sample(cityscapes, tmp_path):
    src, truth = cityscapes
    out = convert("cityscapes_mtan", src, tmp_path / "out")

    tasks, size = read_dataset_info(out)
    assert size == CITY_HW
    assert {t: i.kind for t, i in tasks.items()} == {"semseg": "segmentation", "disparity": "depth"}
    assert tasks["semseg"].labels == CITYSCAPES_CLASSES and len(CITYSCAPES_CLASSES) == 7
    assert tasks["disparity"].units == "mtan inverse depth"
    check_common(out, truth, "label_7")
    for (split, i), a in truth.items():
        d = np.load(out / "disparity" / f"{split}_{i}.npy")
        assert np.array_equal(d, a["depth"][..., 0])  # mtan's values, unscaled; 0 = invalid
        assert (d == 0).sum() == (a["depth"] == 0).sum() > 0


def test_cityscapes_reads_label_7_not_the_others(cityscapes, tmp_path):
    src, truth = cityscapes
    for split in ("train", "val"):  # mtan ships label_19 (and label_2) next to label_7
        (src / split / "label_19").mkdir()
        for i in range(N_TRAIN if split == "train" else N_VAL):
            np.save(src / split / "label_19" / f"{i}.npy", np.full(CITY_HW, 18.0))
    out = convert("cityscapes_mtan", src, tmp_path / "out")
    check_common(out, truth, "label_7")


def test_cli_converts_and_reports(cityscapes, tmp_path):
    from typer.testing import CliRunner

    from polyhead.cli import app

    src, _ = cityscapes
    args = ["data", "convert", "--format", "cityscapes_mtan", "--src", str(src)]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "32x16" in result.output and "train 3, val 2, test 2" in result.output
    assert "disparity (depth)" in result.output


# ------------------------------------------------------------------------------ broken layouts


@pytest.mark.parametrize(
    ("fmt", "folder"),
    [
        ("nyuv2_mtan", "val/normal"),
        ("nyuv2_mtan", "train/image"),
        ("cityscapes_mtan", "train/label_7"),
        ("cityscapes_mtan", "val/depth"),
    ],
)
def test_missing_folder_is_named(tmp_path, fmt, folder):
    kind, hw = ("nyuv2", NYU_HW) if fmt == "nyuv2_mtan" else ("cityscapes", CITY_HW)
    make_mtan(tmp_path / "src", kind, hw)
    (tmp_path / "src" / folder).rename(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match=f"folder not found: .*src/{folder}$"):
        convert(fmt, tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_file_is_named_and_nothing_is_written(nyuv2, tmp_path):
    src, _ = nyuv2
    (src / "val" / "depth" / "1.npy").unlink()
    with pytest.raises(DatasetError, match=r"1 source file\(s\) missing:\n  .*val/depth/1\.npy"):
        convert("nyuv2_mtan", src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_images_must_be_numbered_from_zero(nyuv2, tmp_path):
    src, _ = nyuv2
    (src / "train" / "image" / "1.npy").rename(src / "train" / "image" / "7.npy")
    with pytest.raises(
        DatasetError, match=r"train/image: 3 images must be 0\.npy\.\.2\.npy.*1\.npy"
    ):
        convert("nyuv2_mtan", src, tmp_path / "out")
    (src / "train" / "image" / "7.npy").rename(src / "train" / "image" / "01.npy")
    with pytest.raises(DatasetError, match=r"01\.npy: not named \{i\}\.npy"):
        convert("nyuv2_mtan", src, tmp_path / "out")


def test_empty_split_is_an_error(cityscapes, tmp_path):
    src, _ = cityscapes
    for p in (src / "val" / "image").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match=r"\(val\): no \{i\}\.npy images in .*val/image"):
        convert("cityscapes_mtan", src, tmp_path / "out")


@pytest.mark.parametrize(
    ("folder", "array", "message"),
    [
        ("image", np.zeros((3, *NYU_HW)), r"train/image/0\.npy: expected an image of shape H,W,3"),
        ("label", np.zeros((*NYU_HW, 1)), r"label/0\.npy: expected labels of shape 24,32"),
        ("label", np.zeros((NYU_HW[0], NYU_HW[1] + 1)), r"labels of shape 24,32 .*got \(24, 33\)"),
        (
            "depth",
            np.ones(NYU_HW),
            r"depth/0\.npy: expected depth of shape 24,32,1, got \(24, 32\)",
        ),
        ("normal", np.zeros((3, *NYU_HW)), r"normal/0\.npy: expected normals of shape 24,32,3"),
    ],
)
def test_wrong_shape_is_named(nyuv2, tmp_path, folder, array, message):
    src, _ = nyuv2
    np.save(src / "train" / folder / "0.npy", array.astype(np.float32))
    with pytest.raises(DatasetError, match=message):
        convert("nyuv2_mtan", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_images_of_different_sizes_are_an_error(cityscapes, tmp_path):
    src, _ = cityscapes
    np.save(src / "val" / "image" / "1.npy", np.zeros((8, 16, 3)))
    with pytest.raises(DatasetError, match=r"images differ in size"):
        convert("cityscapes_mtan", src, tmp_path / "out")


@pytest.mark.parametrize(
    ("fmt", "bad", "shown"),
    [
        ("nyuv2_mtan", 13, r"\[13\.0\] are not class indices 0\.\.12 or -1"),
        ("nyuv2_mtan", 255, r"\[255\.0\] are not class indices 0\.\.12 or -1"),  # not mtan's -1
        ("nyuv2_mtan", -2, r"\[-2\.0\] are not class indices"),
        ("nyuv2_mtan", 2.5, r"\[2\.5\] are not class indices"),
        ("cityscapes_mtan", 7, r"\[7\.0\] are not class indices 0\.\.6 or -1"),
    ],
)
def test_labels_out_of_range_are_an_error(tmp_path, fmt, bad, shown):
    kind, hw, folder = (
        ("nyuv2", NYU_HW, "label") if fmt == "nyuv2_mtan" else ("cityscapes", CITY_HW, "label_7")
    )
    truth = make_mtan(tmp_path / "src", kind, hw)
    label = truth[("val", 1)][folder].copy()
    label[3, 4] = bad
    np.save(tmp_path / "src" / "val" / folder / "1.npy", label)
    with pytest.raises(DatasetError, match=rf"val/{folder}/1\.npy: label values {shown}"):
        convert(fmt, tmp_path / "src", tmp_path / "out")


@pytest.mark.parametrize(
    ("folder", "edit", "message"),
    [
        ("image", lambda a: a * 255, r"image values must be in \[0, 1\], got 0\.\.255"),
        (
            "image",
            lambda a: np.rint(a * 255).astype(np.uint8),
            r"expected a float image .* dtype uint8",
        ),
        ("depth", lambda a: np.where(a == 0, -1.0, a), r"depth must be finite and >= 0 .*-1\.0"),
        ("depth", lambda a: np.where(a == 0, np.nan, a), r"depth must be finite and >= 0"),
        ("normal", lambda a: (a + 1) * 127.5, r"normal components must be finite and in \[-1, 1\]"),
    ],
)
def test_wrong_value_ranges_are_an_error(nyuv2, tmp_path, folder, edit, message):
    src, truth = nyuv2
    np.save(src / "train" / folder / "2.npy", edit(truth[("train", 2)][folder]))
    with pytest.raises(DatasetError, match=rf"train/{folder}/2\.npy: {message}"):
        convert("nyuv2_mtan", src, tmp_path / "out")


def test_a_pickled_array_is_not_read(nyuv2, tmp_path):
    src, _ = nyuv2
    np.save(src / "train" / "label" / "0.npy", np.array([{"x": 1}], dtype=object))
    with pytest.raises(DatasetError, match=r"unreadable array .*label/0\.npy"):
        convert("nyuv2_mtan", src, tmp_path / "out")


# ---------------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("config", "fmt", "kind", "hw", "tasks"),
    [
        ("nyuv2_13.yaml", "nyuv2_mtan", "nyuv2", (48, 64), ["semseg", "depth", "normals"]),
        ("cityscapes_7.yaml", "cityscapes_mtan", "cityscapes", (32, 64), ["semseg", "disparity"]),
    ],
)
def test_configs_validate_and_match_the_converted_data(tmp_path, config, fmt, kind, hw, tasks):
    from training import trainer
    from training.setup import check_and_build_tasks

    cfg = load_config(ROOT / "configs" / config)
    assert cfg.task_names == tasks and cfg.model.architecture == "mtan"
    assert cfg.optim.lr == 1e-4 and cfg.optim.epochs == 200
    assert cfg.optim.batch_size == (2 if kind == "nyuv2" else 8)
    assert cfg.data.mean == (0.0, 0.0, 0.0) and cfg.data.std == (1.0, 1.0, 1.0)

    make_mtan(tmp_path / "src", kind, hw, n_train=2, n_val=1)
    out = convert(fmt, tmp_path / "src", tmp_path / "data")
    small = {"data.root": str(out), "model.width": 8, "model.neck_channels": 8}
    cfg = load_config(ROOT / "configs" / config, {**small, "optim.batch_size": 2})
    built, size = check_and_build_tasks(cfg)
    assert [t.name for t in built] == tasks and size == hw
    t = trainer.Trainer(cfg, tmp_path / "run")
    losses, _ = t.step(next(iter(t._loader())))
    assert set(losses) == set(tasks)
    assert all(np.isfinite(float(v)) for v in losses.values())
