"""Readers of NYUD-v2, PASCAL-Context and Cityscapes in their original layouts, and the converter.

Every fixture is a tiny dataset written here in the source's own layout and file formats.
"""

import json

import numpy as np
import pytest
from PIL import Image

from training.data.convert import VAL_FRACTION, convert
from training.data.folder import DatasetError, FolderDataset, read_dataset_info

H, W = 16, 20


def rgb(seed, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def split_ids(root, split):
    return (root / "splits" / f"{split}.txt").read_text().split()


def targets(root, split, sid, tasks=None):
    ds = FolderDataset(root, split, tasks)
    return ds[ds.ids.index(sid)]["targets"]


def random_normals(seed, h=H, w=W):
    n = np.random.default_rng(seed).normal(size=(h, w, 3))
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------ NYUD-v2


NYUD_TRAIN, NYUD_VAL = ["0001", "0002"], ["0003"]


def make_nyud(root):
    for folder in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / folder).mkdir(parents=True)
    (root / "gt_sets" / "train.txt").write_text("\n".join(NYUD_TRAIN) + "\n")
    (root / "gt_sets" / "val.txt").write_text("\n".join(NYUD_VAL) + "\n")
    truth = {}
    for k, sid in enumerate(NYUD_TRAIN + NYUD_VAL):
        rng = np.random.default_rng(k)
        Image.fromarray(rgb(k)).save(root / "images" / f"{sid}.jpg", quality=95)
        seg = rng.integers(0, 41, (H, W)).astype(np.uint8)
        seg[0, :3] = (0, 1, 40)  # void, first and last class
        Image.fromarray(seg).save(root / "segmentation" / f"{sid}.png")
        depth = rng.uniform(0.5, 9.0, (H, W)).astype(np.float32)
        depth[1, 1] = 0.0  # invalid
        np.save(root / "depth" / f"{sid}.npy", depth)
        normals = random_normals(k)
        normals[2, 2] = 0.0  # invalid
        np.save(root / "normals" / f"{sid}.npy", normals)
        edge = (rng.random((H, W)) < 0.1).astype(np.float32)
        np.save(root / "edge" / f"{sid}.npy", edge)
        truth[sid] = {"seg": seg, "depth": depth, "normals": normals, "edge": edge}
    return truth


def test_nyud_converts_with_remapped_labels_depth_normals_edges_and_splits(tmp_path):
    src = tmp_path / "NYUD_MT"
    truth = make_nyud(src)
    out = convert("nyud", src, tmp_path / "nyud")

    tasks, size = read_dataset_info(out)
    assert size == (H, W)
    assert {t: i.kind for t, i in tasks.items()} == {
        "semseg": "segmentation",
        "depth": "depth",
        "normals": "normals",
        "edges": "edges",
    }
    assert len(tasks["semseg"].labels) == 40 and tasks["semseg"].labels[0] == "wall"
    assert tasks["semseg"].ignore_index == 255 and tasks["depth"].units == "m"
    assert split_ids(out, "train") == NYUD_TRAIN
    assert split_ids(out, "val") == split_ids(out, "test") == NYUD_VAL

    for split, sid in (("train", "0002"), ("val", "0003")):
        t, gt = targets(out, split, sid), truth[sid]
        seg = t["semseg"].numpy()
        assert (seg[0, :3] == [255, 0, 39]).all()
        expected = np.where(gt["seg"] == 0, 255, gt["seg"].astype(np.int64) - 1)
        assert (seg == expected).all()
        assert np.array_equal(t["depth"][0].numpy(), gt["depth"])  # float32, untouched
        n = t["normals"].numpy().transpose(1, 2, 0)
        assert (n[2, 2] == 0).all()
        valid = np.linalg.norm(gt["normals"], axis=-1) > 0
        assert np.abs(n[valid] - gt["normals"][valid]).max() < 0.02  # 8-bit encoding
        assert (t["edges"][0].numpy() == gt["edge"]).all()


def test_nyud_resized_square_keeps_labels_nearest(tmp_path):
    src = tmp_path / "NYUD_MT"
    truth = make_nyud(src)
    out = convert("nyud", src, tmp_path / "nyud8", size=8)
    assert read_dataset_info(out)[1] == (8, 8)
    t = targets(out, "train", "0001")
    seg = t["semseg"].numpy()
    assert seg.shape == (8, 8)
    remapped = np.where(truth["0001"]["seg"] == 0, 255, truth["0001"]["seg"].astype(int) - 1)
    rows, cols = (np.arange(8) * 2 + 1), (np.arange(8) * 2.5 + 1.25).astype(int)
    assert (seg == remapped[rows[:, None], cols[None, :]]).all()
    depth = t["depth"][0].numpy()
    assert set(np.unique(depth)) <= set(np.unique(truth["0001"]["depth"]))  # never interpolated


def test_nyud_missing_folder_is_named(tmp_path):
    src = tmp_path / "NYUD_MT"
    make_nyud(src)
    (src / "normals").rename(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match=r"NYUD_MT/normals"):
        convert("nyud", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_file_is_named_and_nothing_is_written(tmp_path):
    src = tmp_path / "NYUD_MT"
    make_nyud(src)
    (src / "depth" / "0003.npy").unlink()
    with pytest.raises(DatasetError, match=r"depth/0003\.npy"):
        convert("nyud", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_out_of_range_label_is_an_error(tmp_path):
    src = tmp_path / "NYUD_MT"
    make_nyud(src)
    Image.fromarray(np.full((H, W), 41, np.uint8)).save(src / "segmentation" / "0001.png")
    with pytest.raises(DatasetError, match=r"0001\.png: label values \[40\]"):
        convert("nyud", src, tmp_path / "out")


def test_existing_output_needs_overwrite(tmp_path):
    src = tmp_path / "NYUD_MT"
    make_nyud(src)
    out = tmp_path / "nyud"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(DatasetError, match="--overwrite"):
        convert("nyud", src, out)
    convert("nyud", src, out, overwrite=True)
    assert not (out / "keep").exists() and (out / "dataset.json").is_file()


def test_unknown_format_and_missing_source(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset format 'kitti'"):
        convert("kitti", tmp_path, tmp_path / "out")
    with pytest.raises(DatasetError, match="source folder not found"):
        convert("nyud", tmp_path / "nope", tmp_path / "out")


# ------------------------------------------------------------------------------ PASCAL-Context


PASCAL_TRAIN, PASCAL_VAL = ["2008_000002", "2008_000003"], ["2008_000007"]
WALL, SKY = 440, 360  # PASCAL-Context classes: wall is a NYUD class (normals kept), sky is not


def mat_struct(fields, rows):
    """A MATLAB struct array (1 x len(rows)) as scipy.io.savemat writes it."""
    a = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f, v in zip(fields, row, strict=True):
            a[0, i][f] = v
    return a


def part_anno(sid, objects, shape):
    """A PASCAL-Part ``anno``: objects are (class name, class index, parts {name: mask})."""
    rows = []
    for name, ind, parts in objects:
        mask = np.zeros(shape, np.uint8)
        for m in parts.values():
            mask |= m.astype(np.uint8)
        p = (
            mat_struct(["part_name", "mask"], [[k, v.astype(np.uint8)] for k, v in parts.items()])
            if parts
            else np.zeros((0, 0))
        )
        rows.append([name, np.array([[float(ind)]]), mask, p])
    return mat_struct(["imname", "objects"], [[f"{sid}.jpg", mat_struct(
        ["class", "class_ind", "mask", "parts"], rows
    )]])  # fmt: skip


def make_pascal(root, sizes=None):
    sio = pytest.importorskip("scipy.io")
    for folder in (
        "JPEGImages",
        "ImageSets/Context",
        "semseg/pascal-context",
        "semseg/VOC12",
        "human_parts",
        "normals_distill",
        "sal_distill",
        "pascal-context/trainval",
    ):
        (root / folder).mkdir(parents=True)
    (root / "ImageSets/Context/train.txt").write_text("\n".join(PASCAL_TRAIN) + "\n")
    (root / "ImageSets/Context/val.txt").write_text("\n".join(PASCAL_VAL) + "\n")
    truth = {}
    for k, sid in enumerate(PASCAL_TRAIN + PASCAL_VAL):
        h, w = (sizes or {}).get(sid, (H, W))
        rng = np.random.default_rng(10 + k)
        Image.fromarray(rgb(k, h, w)).save(root / "JPEGImages" / f"{sid}.jpg")
        seg = rng.integers(0, 21, (h, w)).astype(np.uint8)
        seg[0, 0] = 255
        Image.fromarray(seg).save(root / "semseg/pascal-context" / f"{sid}.png")
        label_map = np.full((h, w), WALL, np.uint16)
        label_map[:, w // 2 :] = SKY
        sio.savemat(root / "pascal-context/trainval" / f"{sid}.mat", {"LabelMap": label_map})
        enc = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(enc).save(root / "normals_distill" / f"{sid}.png")
        sal = np.zeros((h, w), np.uint8)
        sal[:, :4] = (0, 127, 128, 255)
        Image.fromarray(sal).save(root / "sal_distill" / f"{sid}.png")
        head = np.zeros((h, w), bool)
        head[:3, :4] = True
        hand = np.zeros((h, w), bool)
        hand[5:7, 2:4] = True
        torso = np.zeros((h, w), bool)
        torso[3:8, :4] = True
        objects = [("dog", 12, {"head": head})]  # a part of a non-person: no human part
        if sid != "2008_000003":  # that image has no annotated person
            objects += [("person", 15, {"head": head, "torso": torso, "rhand": hand})]
            objects += [("person", 15, {})]  # a person without part annotations
        sio.savemat(root / "human_parts" / f"{sid}.mat", {"anno": part_anno(sid, objects, (h, w))})
        truth[sid] = {"seg": seg, "enc": enc, "label_map": label_map}
    voc = np.full((H, W), 7, np.uint8)  # a VOC12 annotation wins over pascal-context
    Image.fromarray(voc).save(root / "semseg/VOC12" / "2008_000007.png")
    return truth


def test_pascal_context_converts_every_task(tmp_path):
    src = tmp_path / "PASCAL_MT"
    truth = make_pascal(src)
    out = convert("pascal_context", src, tmp_path / "pascal")

    tasks, size = read_dataset_info(out)
    assert size == (H, W)
    assert {t: i.kind for t, i in tasks.items()} == {
        "semseg": "segmentation",
        "human_parts": "segmentation",
        "normals": "normals",
        "saliency": "saliency",
        "edges": "edges",
    }
    assert len(tasks["semseg"].labels) == 21 and tasks["semseg"].labels[15] == "person"
    assert tasks["human_parts"].labels == (
        "background", "head", "torso", "upper_arms", "lower_arms", "upper_legs", "lower_legs",
    )  # fmt: skip
    assert split_ids(out, "train") == PASCAL_TRAIN
    assert split_ids(out, "val") == split_ids(out, "test") == PASCAL_VAL

    sid = "2008_000002"
    t = targets(out, "train", sid)
    assert (t["semseg"].numpy() == truth[sid]["seg"]).all()  # 255 kept
    parts = t["human_parts"].numpy()
    assert (parts[:3, :4] == 1).all()  # head
    assert (parts[3:5, :4] == 2).all() and (parts[7, :4] == 2).all()  # torso
    assert (parts[5:7, 2:4] == 4).all() and (parts[5:7, :2] == 2).all()  # hand over torso
    assert (parts[8:] == 0).all() and (parts[:, 4:] == 0).all()  # background
    sal = t["saliency"][0].numpy()
    assert (sal[:, :4] == [0, 0, 1, 1]).all() and (sal[:, 4:] == 0).all()

    n = t["normals"].numpy().transpose(1, 2, 0)
    assert (n[:, W // 2 :] == 0).all()  # sky: not a NYUD class, invalid
    decoded = 2.0 * truth[sid]["enc"].astype(np.float64) / 255.0 - 1.0
    decoded /= np.linalg.norm(decoded, axis=-1, keepdims=True)
    assert np.abs(n[:, : W // 2] - decoded[:, : W // 2]).max() < 0.02

    edges = t["edges"][0].numpy().astype(bool)
    cols = np.nonzero(edges.any(axis=0))[0]
    assert set(cols) <= {W // 2 - 1, W // 2}  # on the wall/sky boundary only
    per_row = edges.sum(axis=1)  # the 2-pixel band, thinned to one pixel a row (the ends of
    assert (per_row[1:-1] == 1).all() and per_row.max() == 1  # the line may be eroded)

    no_person = targets(out, "train", "2008_000003")["human_parts"].numpy()
    assert (no_person == 255).all()
    assert (targets(out, "val", "2008_000007")["semseg"].numpy() == 7).all()  # VOC12 preferred


def test_pascal_context_sizes_differ_needs_size(tmp_path):
    src = tmp_path / "PASCAL_MT"
    make_pascal(src, sizes={"2008_000003": (18, 14)})
    with pytest.raises(DatasetError, match=r"images differ in size.*--size"):
        convert("pascal_context", src, tmp_path / "out")
    out = convert("pascal_context", src, tmp_path / "out", size=12)
    assert read_dataset_info(out)[1] == (12, 12)
    t = targets(out, "train", "2008_000003")
    assert t["semseg"].shape == (12, 12) and t["normals"].shape == (3, 12, 12)
    assert t["edges"][0].numpy().any()  # thin edges survive downsampling


def test_pascal_context_missing_folder_is_named(tmp_path):
    src = tmp_path / "PASCAL_MT"
    make_pascal(src)
    (src / "sal_distill").rename(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match=r"PASCAL_MT/sal_distill"):
        convert("pascal_context", src, tmp_path / "out")


def test_pascal_context_without_scipy_keeps_png_tasks(tmp_path, monkeypatch):
    from training.data import pascal_context

    src = tmp_path / "PASCAL_MT"
    make_pascal(src)
    monkeypatch.setattr(pascal_context, "_scipy_loadmat", lambda: None)
    out = convert("pascal_context", src, tmp_path / "out")
    tasks, _ = read_dataset_info(out)
    assert set(tasks) == {"semseg", "saliency"}
    assert "scipy" in json.loads((out / "dataset.json").read_text())["notes"]["skipped"]


# ---------------------------------------------------------------------------------- Cityscapes


CITY_IDS = {
    "train": [("aachen", "aachen_000000_000019"), ("bochum", "bochum_000000_000313")],
    "val": [("frankfurt", "frankfurt_000000_000294")],
}
BASELINE, FX = 0.209313, 2262.52


def make_cityscapes(root, camera=True, splits=("train", "val")):
    truth = {}
    for split in splits:
        for k, (city, sid) in enumerate(CITY_IDS[split]):
            rng = np.random.default_rng([k, len(split)])
            d = {f: root / f / split / city for f in ("leftImg8bit", "gtFine", "disparity")}
            for folder in d.values():
                folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb(k)).save(d["leftImg8bit"] / f"{sid}_leftImg8bit.png")
            ids = rng.integers(0, 34, (H, W)).astype(np.uint8)
            ids[0, :6] = (0, 7, 9, 26, 33, 1)
            Image.fromarray(ids).save(d["gtFine"] / f"{sid}_gtFine_labelIds.png")
            disp = rng.integers(2, 30000, (H, W)).astype(np.uint16)
            disp[0, :2] = (0, 1)  # invalid: no measurement, zero disparity
            Image.fromarray(disp).save(d["disparity"] / f"{sid}_disparity.png")
            if camera:
                cam = root / "camera" / split / city
                cam.mkdir(parents=True, exist_ok=True)
                (cam / f"{sid}_camera.json").write_text(
                    json.dumps(
                        {
                            "extrinsic": {"baseline": BASELINE, "pitch": 0.04, "x": 1.7},
                            "intrinsic": {"fx": FX, "fy": 2265.3, "u0": 1096.98, "v0": 513.14},
                        }
                    )
                )
            truth[sid] = {"ids": ids, "disp": disp}
    return truth


def test_cityscapes_train_ids_and_metric_depth(tmp_path):
    truth = make_cityscapes(tmp_path / "cityscapes")
    out = convert("cityscapes", tmp_path / "cityscapes", tmp_path / "out")
    tasks, size = read_dataset_info(out)
    assert size == (H, W)
    assert {t: i.kind for t, i in tasks.items()} == {"semseg": "segmentation", "depth": "depth"}
    assert len(tasks["semseg"].labels) == 19 and tasks["semseg"].labels[13] == "car"
    assert tasks["depth"].units == "m"
    assert split_ids(out, "train") == [sid for _, sid in CITY_IDS["train"]]
    assert split_ids(out, "val") == split_ids(out, "test") == ["frankfurt_000000_000294"]

    sid = "bochum_000000_000313"
    t = targets(out, "train", sid)
    seg = t["semseg"].numpy()
    assert (seg[0, :6] == [255, 0, 255, 13, 18, 255]).all()
    table = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10}
    table |= {24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    expected = np.vectorize(lambda v: table.get(int(v), 255))(truth[sid]["ids"])
    assert (seg == expected).all()

    depth = t["depth"][0].numpy()
    p = truth[sid]["disp"].astype(np.float64)
    assert depth[0, 0] == 0 and depth[0, 1] == 0
    want = BASELINE * FX / ((p[1:] - 1) / 256)
    assert np.allclose(depth[1:], want, rtol=1e-5)


def test_cityscapes_without_camera_stores_disparity_scaled_with_width(tmp_path):
    truth = make_cityscapes(tmp_path / "cs", camera=False)
    out = convert("cityscapes", tmp_path / "cs", tmp_path / "out", size=10)
    tasks, size = read_dataset_info(out)
    assert size == (10, 10) and set(tasks) == {"semseg", "disparity"}
    assert tasks["disparity"].kind == "depth" and tasks["disparity"].units == "px"
    sid = "aachen_000000_000019"
    disp = targets(out, "train", sid)["disparity"][0].numpy()
    p = truth[sid]["disp"].astype(np.float64)
    rows, cols = (np.arange(10) * 1.6 + 0.8).astype(int), np.arange(10) * 2 + 1
    d = np.where(p > 0, (p - 1) / 256, 0)[rows[:, None], cols[None, :]]
    assert np.allclose(disp, d * 10 / W, rtol=1e-5)


def test_cityscapes_without_val_carves_one_from_train(tmp_path):
    make_cityscapes(tmp_path / "cs", splits=("train",))
    out = convert("cityscapes", tmp_path / "cs", tmp_path / "out")
    train, val = split_ids(out, "train"), split_ids(out, "val")
    assert len(val) == max(1, round(2 * VAL_FRACTION)) and split_ids(out, "test") == val
    assert sorted(train + val) == sorted(sid for _, sid in CITY_IDS["train"])
    again = convert("cityscapes", tmp_path / "cs", tmp_path / "again")
    assert split_ids(again, "val") == val  # deterministic
    assert "carved" in json.loads((out / "dataset.json").read_text())["splits"]["val"]


def test_cityscapes_missing_folder_is_named(tmp_path):
    make_cityscapes(tmp_path / "cs")
    (tmp_path / "cs" / "disparity").rename(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match=r"cs/disparity"):
        convert("cityscapes", tmp_path / "cs", tmp_path / "out")


def test_cityscapes_missing_camera_file_is_named(tmp_path):
    make_cityscapes(tmp_path / "cs")
    cam = tmp_path / "cs/camera/val/frankfurt/frankfurt_000000_000294_camera.json"
    cam.unlink()
    with pytest.raises(DatasetError, match=r"frankfurt_000000_000294_camera\.json"):
        convert("cityscapes", tmp_path / "cs", tmp_path / "out")


# ------------------------------------------------------------------------------------------ CLI


def test_cli_data_convert(tmp_path):
    from typer.testing import CliRunner

    from polyhead.cli import app

    make_nyud(tmp_path / "NYUD_MT")
    args = ["data", "convert", "--format", "nyud", "--src", str(tmp_path / "NYUD_MT")]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out"), "--size", "8"])
    assert result.exit_code == 0, result.output
    assert "train 2, val 1, test 1" in result.output and "semseg (segmentation)" in result.output
    assert read_dataset_info(tmp_path / "out")[1] == (8, 8)

    (tmp_path / "NYUD_MT" / "edge").rename(tmp_path / "gone")
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2
    assert "NYUD_MT/edge" in result.output
