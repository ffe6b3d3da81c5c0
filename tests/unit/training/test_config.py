"""Bad configs fail before training starts, with a message that names the problem."""

import copy

import pytest
import yaml

from training.config import load_config, parse_config
from training.errors import ConfigError

BASE = {
    "data": {"root": "data/x"},
    "tasks": [{"name": "semseg", "kind": "segmentation"}, {"name": "depth", "kind": "depth"}],
    "model": {"backbone": "resnet18", "width": 8},
    "optim": {"lr": 0.001},
}


def with_(path: str, value):
    raw = copy.deepcopy(BASE)
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    last = keys[-1]
    node[int(last) if last.isdigit() else last] = value
    return raw


def test_base_config_is_valid():
    cfg = parse_config(BASE)
    assert cfg.task_names == ["semseg", "depth"]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "tasks.0.kind",
            "segmentatoin",
            r"tasks\.0\.kind: unknown task kind 'segmentatoin'; valid: classification",
        ),
        (
            "model.backbone",
            "resnet17",
            r"model\.backbone: unknown backbone 'resnet17'; valid: resnet101",
        ),
        ("optim.lr", -0.1, r"optim\.lr: Input should be greater than 0"),
        ("optim.lr", 0, r"optim\.lr: Input should be greater than 0"),
        ("optim.epochs", 0, r"optim\.epochs"),
        ("optim.batch_size", -4, r"optim\.batch_size"),
        ("weighting", {"name": "nope"}, r"weighting\.name: unknown weighting 'nope'"),
        ("model.architecture", "mtan_typo", r"model\.architecture: unknown architecture"),
        ("tasks", [], r"tasks: List should have at least 1 item"),
        ("tasks.1.name", "semseg", r"duplicate task names \['semseg'\]"),
        ("data.std", [0.2, 0.0, 0.2], r"data\.std: every std must be > 0"),
        ("model.widht", 8, r"model\.widht: Extra inputs are not permitted"),
        ("data.augment", {"scale": [0.5, 1.0]}, r"data\.augment\.scale: must satisfy"),
    ],
)
def test_bad_config_is_rejected_naming_the_field(path, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(with_(path, value))


def test_missing_data_folder_fails_before_any_model_is_built(tmp_path, monkeypatch):
    from training import trainer

    built = []
    monkeypatch.setattr(trainer, "build_model", lambda *a, **k: built.append(1))
    cfg = parse_config(with_("data.root", str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match=r"data\.root: folder not found: .*nowhere"):
        trainer.Trainer(cfg, tmp_path / "run")
    assert not built


def test_load_config_reports_file_and_yaml_problems(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(BASE))
    cfg = load_config(good, {"optim.lr": 0.5, "model.width": 16})
    assert cfg.optim.lr == 0.5 and cfg.model.width == 16
    with pytest.raises(ConfigError, match=str(good)):
        load_config(good, {"optim.lr": -1})


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("tasks.0.kind", "segmentatoin", "unknown task kind 'segmentatoin'"),
        ("model.backbone", "resnet17", "unknown backbone 'resnet17'"),
        ("optim.lr", -0.001, "optim.lr: Input should be greater than 0"),
        ("data.root", "/definitely/not/here", "data.root: folder not found: /definitely/not/here"),
    ],
)
def test_cli_train_rejects_bad_config_with_exit_2(tmp_path, path, value, message):
    from typer.testing import CliRunner

    from polyhead.cli import app

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(with_(path, value)))
    result = CliRunner().invoke(
        app, ["train", "--config", str(cfg), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "run").exists()
