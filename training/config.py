"""The training configuration: YAML validated by pydantic, checked against registries and data.

Everything a run needs is here; each component receives only its own section. ``load_config``
parses and validates; ``check_config`` also checks what exists on disk (the data folder, the
tasks it holds), so a bad config fails before any model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from serving.manifest import Std, TaskName
from training.errors import ConfigError
from training.models import ARCHITECTURES, BACKBONES
from training.models.branched import NUM_STAGES, Branches, branch_entries, plan_tree
from training.tasks import TASK_KINDS
from training.weighting import WEIGHTINGS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentConfig(_Section):
    """Training-time augmentations (tasks stay consistent; see training.data.transforms)."""

    hflip: bool = True
    scale: tuple[float, float] = (1.0, 1.0)
    color_jitter: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 1.0 <= v[0] <= v[1]:
            raise ValueError(f"must satisfy 1.0 <= min <= max, got {list(v)}")
        return v


class DataConfig(_Section):
    """Where the data is and how images are normalised."""

    root: Path
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Std = (0.229, 0.224, 0.225)
    augment: AugmentConfig = AugmentConfig()
    num_workers: int = Field(0, ge=0)


class TaskConfig(_Section):
    """One task to train: its dataset name and kind (labels come from the dataset).

    ``auxiliary``: trained and evaluated, never exported (the exported graph and manifest hold
    only the other tasks); in PAD-Net and MTI-Net it gets intermediate predictions only, as in
    the papers, where e.g. edges and normals help semantic segmentation and depth.
    """

    name: TaskName
    kind: str
    auxiliary: bool = False

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in TASK_KINDS:
            raise ValueError(f"unknown task kind {v!r}; valid: {', '.join(TASK_KINDS.names())}")
        return v


class ModelConfig(_Section):
    """Architecture, backbone and sizes."""

    architecture: str = "hps"
    backbone: str = "resnet18"
    width: int = Field(64, ge=4, le=512)
    neck_channels: int = Field(64, ge=4, le=1024)
    weights: Path | None = None  # local backbone weights (safetensors or torch state dict)
    # learning-rate multiplier of the cross-stitch / NDDR fusion units: 100 in the reference
    # code of Vandenhende et al. (the units' gradients are small next to the convolutions')
    fusion_lr_scale: float = Field(100.0, gt=0.0, le=10_000.0)
    # weight of the deep-supervision losses (PAD-Net's initial and MTI-Net's per-scale
    # predictions) next to the final one, inside each task's loss: 1 in the reference code
    deep_supervision_weight: float = Field(1.0, ge=0.0, le=100.0)
    # the branched architecture's tree, [[stage, [[task, ...], [task, ...]]], ...]
    # (training.models.branched); None: its default, one branch per task at the last stage
    branches: Branches | None = None

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        if v not in BACKBONES:
            raise ValueError(f"unknown backbone {v!r}; valid: {', '.join(BACKBONES.names())}")
        return v

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, v: str) -> str:
        if v not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {v!r}; valid: {', '.join(ARCHITECTURES.names())}"
            )
        return v

    @field_validator("branches", mode="before")
    @classmethod
    def _branch_entries(cls, v: Any, info: ValidationInfo) -> Any:
        # the tasks are checked where the tree is built (they are not known here)
        if v is None:
            return v
        architecture = info.data.get("architecture", "branched")
        if architecture != "branched":
            raise ValueError(
                f"only the branched architecture takes branches (architecture is {architecture!r})"
            )
        return branch_entries(v)


class WeightingConfig(_Section):
    """A registered weighting and its hyperparameters."""

    name: str = "equal"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_weighting(cls, v: str) -> str:
        if v not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {v!r}; valid: {', '.join(WEIGHTINGS.names())}")
        return v


class OptimConfig(_Section):
    """AdamW with linear warm-up then cosine decay, per optimizer step."""

    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0.0, le=1.0)
    grad_clip: float | None = Field(1.0, gt=0.0)


class RunConfig(_Section):
    """Reproducibility, precision and bookkeeping."""

    seed: int = 0
    amp: Literal["auto", "on", "off"] = "auto"  # auto: on when CUDA is used
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = True
    checkpoint_every_steps: int | None = Field(None, ge=1)  # plus one at every epoch end
    limit_train_batches: int | None = Field(None, ge=1)  # for smoke runs
    eval_batch_size: int = Field(32, ge=1)
    progress: bool = True
    # metrics.jsonl gets each task's loss and weight every this many optimizer steps
    log_every_steps: int = Field(1, ge=1)


class ExportConfig(_Section):
    """ONNX export and the Triton config generated from it."""

    opset: int = Field(18, ge=13)
    max_batch_size: int = Field(8, ge=1)
    max_queue_delay_microseconds: int = Field(2000, ge=0)
    # Triton config: TensorRT on GPU instances (off, fp16, fp32); zero-data warm-up
    tensorrt: Literal["off", "fp16", "fp32"] = "off"
    warmup: bool = True
    atol: float = Field(1e-4, gt=0.0)
    rtol: float = Field(1e-3, ge=0.0)


class AffinityConfig(_Section):
    """Inter-task affinity (TAG, Fifty et al. 2021) measured during training.

    See ``training.analysis.tag``. Off unless ``every_steps`` is set; the run then writes
    ``affinity_tag.json`` with the mean matrix over the measured steps.
    """

    every_steps: int | None = Field(None, ge=1)  # measure at every this many optimizer steps
    lr: float | None = Field(None, gt=0.0)  # lookahead SGD step; None: the optimizer's current

    @model_validator(mode="after")
    def _lr_needs_steps(self) -> AffinityConfig:
        if self.lr is not None and self.every_steps is None:
            raise ValueError("lr is set but every_steps is not: set every_steps to measure")
        return self


class AnalysisConfig(_Section):
    """Measurements of the tasks' relationships taken while training."""

    affinity: AffinityConfig | None = None


class TrainConfig(_Section):
    """A whole training run."""

    name: str = "polyhead"
    data: DataConfig
    tasks: list[TaskConfig] = Field(min_length=1)
    model: ModelConfig = ModelConfig()
    weighting: WeightingConfig = WeightingConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()
    export: ExportConfig = ExportConfig()
    analysis: AnalysisConfig = AnalysisConfig()

    @model_validator(mode="after")
    def _unique_tasks(self) -> TrainConfig:
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tasks: duplicate task names {dupes}")
        if all(t.auxiliary for t in self.tasks):
            raise ValueError("tasks: every task is auxiliary; at least one must be exported")
        if self.model.branches is not None:  # the tree against the tasks, before any model
            try:
                plan_tree(self.model.branches, names, NUM_STAGES)
            except ConfigError as e:
                raise ValueError(str(e)) from e
        return self

    @property
    def task_names(self) -> list[str]:
        """Task names in config order (the order of heads and ONNX outputs)."""
        return [t.name for t in self.tasks]


def _render(e: ValidationError, source: str) -> str:
    lines = [f"invalid training config {source}:"]
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], source: str = "<dict>") -> TrainConfig:
    """Validate a config dict (relative paths stay relative to the working directory)."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_render(e, source)) from e


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config file; ``overrides`` maps dotted keys (``optim.lr``) to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    return parse_config(raw, source=str(path))


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {p} is not a section")
    node[parts[-1]] = value
