"""ImageNet ResNet checkpoints (torchvision / timm layout) load into our backbones via the key map.

The reference checkpoint is built here from an independent description of torchvision's ResNet
(torchvision/models/resnet.py: ``_make_layer``, ``BasicBlock``, ``Bottleneck``), filled with
random tensors, so every backbone tensor can be traced back to the one source tensor it must be.
"""

import argparse
import copy

import pytest
import torch
from safetensors.torch import save_file

from training.config import parse_config
from training.errors import ConfigError
from training.models import build_backbone
from training.models.pretrained import reference_key
from training.runs import build_model
from training.tasks import build_task

ARCHS = {  # name: (bottleneck, blocks per stage)
    "resnet18": (False, [2, 2, 2, 2]),
    "resnet34": (False, [3, 4, 6, 3]),
    "resnet50": (True, [3, 4, 6, 3]),
}


def reference_shapes(name: str, num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ``resnetN().state_dict()``, from the architecture alone."""
    bottleneck, layers = ARCHS[name]
    expansion = 4 if bottleneck else 1
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(key: str, cout: int, cin: int, k: int) -> None:
        shapes[f"{key}.weight"] = (cout, cin, k, k)

    def bn(key: str, c: int) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{key}.{p}"] = (c,)
        shapes[f"{key}.num_batches_tracked"] = ()

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
        stride = 1 if i == 0 else 2
        for j in range(blocks):
            p = f"layer{i + 1}.{j}"
            if bottleneck:
                conv(f"{p}.conv1", planes, inplanes, 1)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", planes * expansion, planes, 1)
                bn(f"{p}.bn3", planes * expansion)
            else:
                conv(f"{p}.conv1", planes, inplanes, 3)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
            # only the first block of a stage strides; it also changes the channel count
            if j == 0 and (stride != 1 or inplanes != planes * expansion):
                conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    shapes["fc.weight"] = (num_classes, 512 * expansion)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def reference_checkpoint(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors (all distinct) in the reference layout, scaled so a forward pass stays finite."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in reference_shapes(name).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.randint(1, 10**9, shape, generator=g)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 4:  # conv: He-like scale
            state[key] = torch.randn(shape, generator=g) / torch.Size(shape[1:]).numel() ** 0.5
        elif key.endswith(".weight") and len(shape) == 1:  # BN scale
            state[key] = torch.rand(shape, generator=g) * 0.5 + 0.25
        else:
            state[key] = torch.randn(shape, generator=g)
    return state


def source_of(key: str) -> str:
    """Which reference key each of our keys must come from (written apart from the key map)."""
    parts = key.split(".")
    if parts[0] == "stem":
        return {"0": "conv1", "1": "bn1"}[parts[1]] + "." + parts[2]
    assert parts[0] == "stages"
    rest = ["downsample" if p == "down" else p for p in parts[3:]]
    return ".".join([f"layer{int(parts[1]) + 1}", parts[2], *rest])


def assert_loaded_from(backbone, ref: dict[str, torch.Tensor]) -> None:
    ours = backbone.state_dict()
    # every backbone tensor has its one source, and every source but the classifier is used
    assert {source_of(k) for k in ours} == {k for k in ref if not k.startswith("fc.")}
    for k, v in ours.items():
        assert torch.equal(v, ref[source_of(k)]), k
    # the same, spelled out for the stem, one block and one shortcut
    assert torch.equal(backbone.stem[0].weight, ref["conv1.weight"])
    assert torch.equal(backbone.stem[1].running_mean, ref["bn1.running_mean"])
    assert torch.equal(backbone.stem[1].running_var, ref["bn1.running_var"])
    block = backbone.stages[2][1]
    assert torch.equal(block.conv2.weight, ref["layer3.1.conv2.weight"])
    assert torch.equal(block.bn1.weight, ref["layer3.1.bn1.weight"])
    assert torch.equal(block.bn2.bias, ref["layer3.1.bn2.bias"])
    assert torch.equal(block.bn2.running_var, ref["layer3.1.bn2.running_var"])
    assert torch.equal(block.bn2.num_batches_tracked, ref["layer3.1.bn2.num_batches_tracked"])
    down = backbone.stages[1][0].down
    assert torch.equal(down[0].weight, ref["layer2.0.downsample.0.weight"])
    assert torch.equal(down[1].running_mean, ref["layer2.0.downsample.1.running_mean"])


def save(state: dict[str, torch.Tensor], path, fmt: str):
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "timm":
        # a timm train checkpoint: DDP prefixes, EMA weights first, an argparse Namespace
        other = {k: torch.zeros_like(v) for k, v in state.items()}
        torch.save(
            {
                "epoch": 7,
                "arch": "resnet",
                "state_dict": {f"module.{k}": v for k, v in other.items()},
                "state_dict_ema": {f"module.{k}": v for k, v in state.items()},
                "args": argparse.Namespace(lr=0.1, model="resnet"),
            },
            path,
        )
    else:
        torch.save(state, path)
    return path


def test_reference_layout_matches_torchvision_sizes():
    # torchvision's state_dict lengths and parameter counts for these models
    for name, n_keys, n_params in [("resnet18", 122, 11_689_512), ("resnet50", 320, 25_557_032)]:
        shapes = reference_shapes(name)
        assert len(shapes) == n_keys
        params = [
            s for k, s in shapes.items() if not k.rsplit(".", 1)[1].startswith(("running", "num"))
        ]
        assert sum(torch.Size(s).numel() for s in params) == n_params


@pytest.mark.parametrize(
    ("name", "fmt", "filename"),
    [
        ("resnet18", "torchvision", "resnet18-f37072fd.pth"),
        ("resnet18", "timm", "model_best.pth.tar"),
        ("resnet18", "safetensors", "model.safetensors"),
        ("resnet34", "torchvision", "pytorch_model.bin"),
        ("resnet50", "torchvision", "resnet50-0676ba61.pth"),
        ("resnet50", "timm", "checkpoint.pt"),
        ("resnet50", "safetensors", "model.safetensors"),
    ],
)
def test_reference_checkpoint_loads_into_the_backbone(tmp_path, name, fmt, filename):
    ref = reference_checkpoint(name)
    path = save(ref, tmp_path / filename, fmt)
    backbone = build_backbone(name, weights=path)
    assert_loaded_from(backbone, ref)
    backbone.eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == backbone.feature_channels
    assert all(torch.isfinite(f).all() for f in feats)


def test_reference_checkpoint_loads_through_the_config(tmp_path):
    ref = reference_checkpoint("resnet18", seed=3)
    path = save(ref, tmp_path / "resnet18.pth", "torchvision")
    cfg = parse_config(
        {
            "data": {"root": "data/x"},
            "tasks": [{"name": "semseg", "kind": "segmentation"}],
            "model": {"backbone": "resnet18", "width": 64, "weights": str(path)},
        }
    )
    model = build_model(cfg, [build_task("semseg", "segmentation", ("a", "b"))])
    assert_loaded_from(model.backbone, ref)
    # the heads stay random; the checkpoint's classifier goes nowhere
    assert not any(k.startswith("fc.") or ".fc." in k for k in model.backbone.state_dict())


def test_key_map_rules():
    assert reference_key("stem.0.weight") == "conv1.weight"
    assert reference_key("stem.1.running_var") == "bn1.running_var"
    assert reference_key("stages.0.1.conv2.weight") == "layer1.1.conv2.weight"
    assert reference_key("stages.3.0.down.1.bias") == "layer4.0.downsample.1.bias"
    with pytest.raises(ConfigError, match="no torchvision/timm ResNet counterpart"):
        reference_key("neck.0.weight")


def test_old_torchvision_file_without_num_batches_tracked_loads(tmp_path):
    ref = reference_checkpoint("resnet18")
    old = {k: v for k, v in ref.items() if not k.endswith("num_batches_tracked")}
    backbone = build_backbone("resnet18", weights=save(old, tmp_path / "old.pth", "torchvision"))
    assert torch.equal(backbone.stem[0].weight, ref["conv1.weight"])
    assert int(backbone.stem[1].num_batches_tracked) == 0


def test_missing_key_is_named(tmp_path):
    ref = reference_checkpoint("resnet18")
    del ref["layer2.0.downsample.1.running_var"]
    path = save(ref, tmp_path / "w.pth", "torchvision")
    with pytest.raises(ConfigError) as e:
        build_backbone("resnet18", weights=path)
    msg = str(e.value)
    assert "does not fit the backbone resnet18 (width 64)" in msg
    assert "keys detected as torchvision/timm ResNet" in msg
    assert "missing: layer2.0.downsample.1.running_var" in msg
    assert "unexpected" not in msg


def test_wrong_shape_is_named(tmp_path):
    ref = reference_checkpoint("resnet18")
    ref["layer1.0.conv1.weight"] = torch.randn(64, 64, 1, 1)
    with pytest.raises(
        ConfigError,
        match=r"shape mismatch: layer1\.0\.conv1\.weight: file \(64, 64, 1, 1\), "
        r"backbone \(64, 64, 3, 3\)",
    ):
        build_backbone("resnet18", weights=save(ref, tmp_path / "w.pth", "torchvision"))


def test_other_depth_is_named(tmp_path):
    path = save(reference_checkpoint("resnet50"), tmp_path / "r50.pth", "torchvision")
    with pytest.raises(ConfigError) as e:
        build_backbone("resnet18", weights=path)
    msg = str(e.value)
    assert "unexpected: layer1.0.bn3.bias" in msg
    assert "shape mismatch: layer1.0.conv1.weight" in msg
    assert "the file looks like resnet50" in msg


def test_extra_module_is_unexpected(tmp_path):
    ref = reference_checkpoint("resnet18")
    ref["layer1.0.se.fc1.weight"] = torch.randn(4, 64, 1, 1)  # e.g. timm's seresnet18
    with pytest.raises(ConfigError, match=r"unexpected: layer1\.0\.se\.fc1\.weight"):
        build_backbone("resnet18", weights=save(ref, tmp_path / "w.pth", "torchvision"))


def test_imagenet_weights_need_width_64(tmp_path):
    path = save(reference_checkpoint("resnet18"), tmp_path / "w.pth", "torchvision")
    with pytest.raises(ConfigError) as e:
        build_backbone("resnet18", width=32, weights=path)
    msg = str(e.value)
    assert "fit only the standard width 64" in msg
    assert "this resnet18 has width 32" in msg


def test_unknown_formats_are_config_errors(tmp_path):
    npz = tmp_path / "w.npz"
    npz.write_bytes(b"PK")
    with pytest.raises(ConfigError, match=r"unknown weights format '\.npz'.*\.safetensors"):
        build_backbone("resnet18", weights=npz)

    vit = save({"patch_embed.proj.weight": torch.randn(8, 3, 16, 16)}, tmp_path / "vit.pth", "")
    with pytest.raises(
        ConfigError, match=r"unrecognised key convention.*patch_embed\.proj\.weight"
    ):
        build_backbone("resnet18", weights=vit)

    corrupt = tmp_path / "bad.pth"
    corrupt.write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="cannot read"):
        build_backbone("resnet18", weights=corrupt)

    not_tensors = tmp_path / "meta.pt"
    torch.save({"conv1.weight": [1, 2, 3]}, not_tensors)
    with pytest.raises(ConfigError, match="not a tensor"):
        build_backbone("resnet18", weights=not_tensors)


def test_own_state_dict_still_loads_with_a_ddp_prefix(tmp_path):
    src = build_backbone("resnet18", width=8)
    state = {f"module.{k}": v for k, v in copy.deepcopy(src.state_dict()).items()}
    torch.save(state, tmp_path / "ours.pt")
    dst = build_backbone("resnet18", width=8, weights=tmp_path / "ours.pt")
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k

    with pytest.raises(
        ConfigError, match=r"keys detected as polyhead \(removed prefix 'module\.'\)"
    ):
        build_backbone("resnet18", width=4, weights=tmp_path / "ours.pt")
