import pytest
import torch

from training.errors import ConfigError
from training.models import ARCHITECTURES, BACKBONES, build_backbone
from training.tasks import TASK_KINDS, build_task


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_returns_four_scales(name):
    b = build_backbone(name, width=4)
    feats = b(torch.randn(2, 3, 64, 64))
    assert [f.shape[1] for f in feats] == b.feature_channels
    assert [64 // f.shape[-1] for f in feats] == b.feature_strides == [4, 8, 16, 32]


def all_tasks(arch: str = "hps"):
    tasks = [build_task(f"t_{k}", k, ("a", "b", "c")) for k in TASK_KINDS.names()]
    return tasks[:1] if arch == "single_task" else tasks  # the baseline model takes one task


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_every_architecture_returns_one_output_per_task(arch):
    tasks = all_tasks(arch)
    model = ARCHITECTURES.get(arch)(build_backbone("resnet18", width=4), tasks, neck_channels=8)
    out = model(torch.randn(2, 3, 48, 64))
    assert list(out) == [t.name for t in tasks]
    for t in tasks:
        expect = (2, t.channels, 48, 64) if t.dense else (2, t.channels)
        assert tuple(out[t.name].shape) == expect, t.name
    assert out.shared, "shared representation exposed for gradient methods"


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_shared_and_task_parameters_partition_the_model(arch):
    model = ARCHITECTURES.get(arch)(
        build_backbone("resnet18", width=4), all_tasks(arch), neck_channels=8
    )
    shared = {id(p) for p in model.shared_parameters()}
    own = {id(p) for p in model.task_parameters()}
    assert shared and not shared & own
    assert shared | own == {id(p) for p in model.parameters()}
    # with one task nothing is combined: every parameter is that task's, and counts as shared
    assert bool(own) == (len(model.tasks) > 1)


def test_image_only_model_has_no_neck():
    tasks = [build_task("c", "classification", ("x", "y"))]
    model = ARCHITECTURES.get("hps")(build_backbone("resnet18", width=4), tasks)
    assert model.neck is None
    assert model(torch.randn(2, 3, 32, 32))["c"].shape == (2, 2)


def test_local_backbone_weights_load(tmp_path):
    from safetensors.torch import save_file

    src = build_backbone("resnet18", width=4)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = build_backbone("resnet18", width=4, weights=path)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k])


def test_backbone_weights_that_do_not_fit_are_a_config_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(
        {k: v.contiguous() for k, v in build_backbone("resnet18", width=8).state_dict().items()},
        str(path),
    )
    with pytest.raises(ConfigError, match="does not fit"):
        build_backbone("resnet18", width=4, weights=path)
    with pytest.raises(ConfigError, match="not found"):
        build_backbone("resnet18", width=4, weights=tmp_path / "missing.safetensors")


def test_unknown_backbone_lists_valid():
    with pytest.raises(KeyError, match="valid: resnet101, resnet18"):
        build_backbone("resnet17")
