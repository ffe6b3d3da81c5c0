import json

import numpy as np
import pytest
from PIL import Image

from training.data.synth import (
    SHAPE_CLASSES,
    SceneConfig,
    composite,
    instance_edges,
    pixel_size,
    render_scene,
    scene_surfaces,
    split_ids,
    write_dataset,
)


def scene(i, size=64, seed=0):
    return render_scene(np.random.default_rng([seed, i]), SceneConfig(size=size))


def test_same_seed_same_scene_other_seed_other_scene():
    a, b, c = scene(3), scene(3), scene(3, seed=1)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth)
    assert not np.array_equal(a.image, c.image)


def test_written_dataset_is_byte_identical_for_a_seed(tmp_path):
    a = write_dataset(tmp_path / "a", n=6, size=32, seed=5)
    b = write_dataset(tmp_path / "b", n=6, size=32, seed=5)
    for f in sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file()):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_layout_and_splits(tmp_path):
    root = write_dataset(tmp_path / "d", n=12, size=32, seed=0)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["format"] == "polyhead-dataset/1" and meta["image_size"] == [32, 32]
    assert set(meta["tasks"]) == {"semseg", "depth", "normals", "edges", "shapes", "background"}
    splits = {
        s: (root / "splits" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")
    }
    ids = sorted(p.stem for p in (root / "images").glob("*.png"))
    assert sorted(i for ids_ in splits.values() for i in ids_) == ids and len(ids) == 12
    assert all(splits.values())
    sid = ids[0]
    assert Image.open(root / "images" / f"{sid}.png").mode == "RGB"
    assert np.load(root / "depth" / f"{sid}.npy").dtype == np.float32
    assert set(np.unique(np.asarray(Image.open(root / "edges" / f"{sid}.png")))) <= {0, 255}
    labels = json.loads((root / "labels.json").read_text())
    assert set(labels) == set(ids)


def test_refuses_to_overwrite_without_permission(tmp_path):
    root = write_dataset(tmp_path / "d", n=3, size=16)
    with pytest.raises(FileExistsError):
        write_dataset(root, n=3, size=16)
    write_dataset(root, n=4, size=16, overwrite=True)
    assert len(list((root / "images").iterdir())) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp dirs left"


@pytest.mark.parametrize("i", range(8))
def test_shapes_are_in_front_of_the_background(i):
    s = scene(i)
    assert (s.depth > 0).all()
    bg = s.semseg == 0
    if (~bg).any():
        assert s.depth[~bg].max() < s.depth[bg].min()


@pytest.mark.parametrize("i", range(12))
def test_zbuffer_shows_the_nearest_surface_whatever_the_drawing_order(i):
    s = scene(i)
    _, surfaces = scene_surfaces(np.random.default_rng([0, i]), SceneConfig(size=64))
    # every surface's depth where it covers the pixel, inf elsewhere: the visible one is the min
    stack = np.stack([np.where(f.mask, f.depth, np.inf) for f in surfaces])
    assert np.array_equal(s.instances, stack.argmin(0))
    assert np.allclose(s.depth, stack.min(0), atol=1e-6)
    reordered = composite([surfaces[0], *surfaces[:0:-1]])
    assert np.array_equal(reordered.depth, composite(surfaces).depth)
    assert np.array_equal(reordered.semseg, s.semseg)


def test_zbuffer_is_exercised_by_overlapping_shapes():
    hidden = 0
    for i in range(30):
        _, surfaces = scene_surfaces(np.random.default_rng([0, i]), SceneConfig(size=64))
        for a in surfaces[1:]:
            for b in surfaces[1:]:
                if a is not b:
                    hidden += int((a.mask & b.mask & (a.depth < b.depth)).sum())
    assert hidden > 100, "scenes should contain overlaps for the z-buffer to resolve"


def test_flat_shapes_are_slanted_not_constant_depth():
    spreads = []
    for i in range(20):
        s = scene(i)
        for inst in range(1, s.instances.max() + 1):
            m = s.instances == inst
            cls = np.bincount(s.semseg[m]).argmax() if m.any() else 0
            if m.sum() > 50 and SHAPE_CLASSES[cls - 1] != "circle":
                spreads.append(np.ptp(s.depth[m]))
    assert spreads and np.median(spreads) > 0.02


@pytest.mark.parametrize("i", range(6))
def test_normals_are_unit_and_consistent_with_depth(i):
    s = scene(i, size=128)
    assert np.allclose(np.linalg.norm(s.normals, axis=-1), 1.0, atol=1e-5)
    p = pixel_size(128)
    dzdy, dzdx = np.gradient(s.depth.astype(np.float64), p)
    fd = np.stack([dzdx, dzdy, -np.ones_like(dzdx)], -1)
    fd /= np.linalg.norm(fd, axis=-1, keepdims=True)
    # interior: same instance in a 5x5 neighbourhood, away from sphere rims (steep)
    inst = s.instances
    same = np.ones_like(inst, bool)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            same &= np.roll(np.roll(inst, dy, 0), dx, 1) == inst
    same[:2], same[-2:], same[:, :2], same[:, -2:] = False, False, False, False
    interior = same & (s.normals[..., 2] < -0.5)
    cos = np.clip((fd * s.normals).sum(-1)[interior], -1, 1)
    assert np.degrees(np.arccos(cos)).mean() < 3.0


def test_edges_are_exactly_instance_boundaries():
    s = scene(2)
    inst = s.instances
    expect = np.zeros_like(s.edges)
    h, w = inst.shape
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and inst[yy, xx] != inst[y, x]:
                    expect[y, x] = True
    assert np.array_equal(s.edges, expect)
    assert np.array_equal(instance_edges(np.zeros((4, 4), int)), np.zeros((4, 4), bool))


@pytest.mark.parametrize("i", range(10))
def test_multilabel_matches_visible_classes(i):
    s = scene(i)
    counts = np.bincount(s.semseg.ravel(), minlength=5)
    visible = [SHAPE_CLASSES[c - 1] for c in range(1, 5) if counts[c] >= 8]
    assert s.shapes == visible


def test_image_level_labels_match_the_written_semseg(tmp_path):
    root = write_dataset(tmp_path / "d", n=8, size=64, seed=3)
    labels = json.loads((root / "labels.json").read_text())
    for sid, lab in labels.items():
        sem = np.asarray(Image.open(root / "semseg" / f"{sid}.png"))
        counts = np.bincount(sem.ravel(), minlength=5)
        assert lab["shapes"] == [SHAPE_CLASSES[c - 1] for c in range(1, 5) if counts[c] >= 8]
        assert lab["background"] in ("stripes", "checker", "noise", "gradient")


def test_parallel_writing_is_byte_identical(tmp_path):
    a = write_dataset(tmp_path / "a", n=5, size=16, seed=2, workers=1)
    b = write_dataset(tmp_path / "b", n=5, size=16, seed=2, workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_written_folder_has_ordinary_permissions(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    root = write_dataset(tmp_path / "d", n=3, size=16)
    assert (root.stat().st_mode & 0o777) == (probe.stat().st_mode & 0o777)


def test_bad_arguments_are_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="min_shapes"):
        SceneConfig(min_shapes=3, max_shapes=2)
    with pytest.raises(ValueError, match="size"):
        write_dataset(tmp_path / "d", n=3, size=4)
    with pytest.raises(ValueError, match="summing to 1"):
        write_dataset(tmp_path / "d", n=3, size=16, splits=(0.5, 0.1, 0.1))
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        write_dataset(tmp_path / "file", n=3, size=16, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_splits_partition_and_respect_zero_fractions():
    ids = [f"{i:06d}" for i in range(20)]
    s = split_ids(ids, 0, (0.8, 0.1, 0.1))
    assert sorted(s["train"] + s["val"] + s["test"]) == ids
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (16, 2, 2)
    assert split_ids(ids, 0, (0.9, 0.1, 0.0))["test"] == []
    assert split_ids(ids, 1, (0.8, 0.1, 0.1)) != s
