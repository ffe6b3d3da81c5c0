"""Map local ImageNet ResNet checkpoints (torchvision or timm) onto our ResNet backbones.

torchvision's and timm's ResNet-18/34/50/101 share one key layout: ``conv1``/``bn1`` stem,
``layer{1..4}.{block}.conv{k}``/``bn{k}``, ``downsample.0`` (1x1 conv) and ``downsample.1`` (BN)
on a stage's first block, and an ``fc`` classifier. Ours has the same modules under other names:

=======================================  ======================================
ours                                     torchvision / timm
=======================================  ======================================
``stem.0.weight``                        ``conv1.weight``
``stem.1.*``                             ``bn1.*``
``stages.{i}.{j}.conv{k}.weight``        ``layer{i+1}.{j}.conv{k}.weight``
``stages.{i}.{j}.bn{k}.*``               ``layer{i+1}.{j}.bn{k}.*``
``stages.{i}.{j}.down.{0,1}.*``          ``layer{i+1}.{j}.downsample.{0,1}.*``
(none: no classifier)                    ``fc.weight``, ``fc.bias`` (dropped)
=======================================  ======================================

The map is built from the backbone's own keys, so every backbone tensor gets exactly one source
tensor; anything missing, left over or of the wrong shape is a ConfigError. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.errors import ConfigError

OURS = "polyhead"
REFERENCE = "torchvision/timm ResNet"
SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".pth.tar")  # .pth.tar: timm's train output
IMAGENET_WIDTH = 64

# timm's load_state_dict picks the first of these present (EMA weights first).
_WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers
_DROPPED = ("fc.",)  # the ImageNet classifier
_SHOWN = 8  # keys listed per problem in an error

_STAGE = re.compile(r"stages\.(\d+)\.(\d+)\.(.+)")
_LAYER = re.compile(r"layer(\d+)\.(\d+)\.")
_KNOWN: dict[tuple[bool, tuple[int, ...]], str] = {
    (False, (2, 2, 2, 2)): "resnet18",
    (False, (3, 4, 6, 3)): "resnet34",
    (True, (3, 4, 6, 3)): "resnet50",
    (True, (3, 4, 23, 3)): "resnet101",
    (True, (3, 8, 36, 3)): "resnet152",
}


def reference_key(key: str) -> str:
    """The torchvision/timm name of one of our ResNet state-dict keys."""
    if key.startswith("stem.0."):
        return "conv1." + key.removeprefix("stem.0.")
    if key.startswith("stem.1."):
        return "bn1." + key.removeprefix("stem.1.")
    m = _STAGE.fullmatch(key)
    if m is None:
        raise ConfigError(f"model.weights: backbone key {key!r} has no {REFERENCE} counterpart")
    stage, block, rest = m.groups()
    if rest.startswith("down."):
        rest = "downsample." + rest.removeprefix("down.")
    return f"layer{int(stage) + 1}.{block}.{rest}"


def read_checkpoint(path: Path) -> Any:
    """Read a local weights file: safetensors, or ``torch.save`` (.pth, .pt, .bin, .pth.tar)."""
    if not path.is_file():
        raise ConfigError(f"model.weights: file not found: {path}")
    suffix = next((s for s in SUFFIXES if path.name.lower().endswith(s)), None)
    if suffix is None:
        raise ConfigError(
            f"model.weights: unknown weights format {path.suffix or '(no suffix)'!r} for {path}; "
            f"use one of {', '.join(SUFFIXES)}"
        )
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        # timm training checkpoints keep their argparse Namespace under "args".
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file can fail in many ways
        raise ConfigError(f"model.weights: cannot read {path} as {suffix}: {e}") from e


def unwrap_checkpoint(checkpoint: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict inside a (possibly wrapped) checkpoint, and notes on what was unwrapped.

    Takes timm's wrapper keys (``state_dict_ema``, ``model_ema``, ``state_dict``, ``model``, in
    timm's order) and strips ``module.`` / ``_orig_mod.`` prefixes.
    """
    notes: list[str] = []
    if not isinstance(checkpoint, Mapping):
        raise ConfigError(f"model.weights: expected a state dict, got {type(checkpoint).__name__}")
    for wrapper in _WRAPPERS:
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
            notes.append(f"unwrapped {wrapper!r}")
            break
    state: dict[str, torch.Tensor] = {}
    stripped: set[str] = set()
    for key, value in checkpoint.items():
        name = str(key)
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name.removeprefix(prefix)
                stripped.add(prefix)
        if not isinstance(value, torch.Tensor):
            raise ConfigError(
                f"model.weights: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        if name in state:
            raise ConfigError(f"model.weights: two tensors for {name!r} once prefixes are removed")
        state[name] = value
    notes.extend(f"removed prefix {p!r}" for p in _PREFIXES if p in stripped)
    return state, notes


def detect_convention(keys: Iterable[str]) -> str:
    """``OURS`` or ``REFERENCE`` (torchvision/timm) from the key names; else a ConfigError."""
    keys = list(keys)
    ours = any(k.startswith(("stem.", "stages.")) for k in keys)
    ref = any(k.startswith(("conv1.", "bn1.", "layer1.")) for k in keys)
    if ours != ref:
        return OURS if ours else REFERENCE
    what = "mixes both" if ours else "matches neither"
    raise ConfigError(
        f"model.weights: unrecognised key convention ({what} of {OURS} 'stem.*'/'stages.*' and "
        f"{REFERENCE} 'conv1.*'/'layer1.*'); first keys: {', '.join(keys[:_SHOWN]) or '(none)'}"
    )


def map_to_backbone(
    model: nn.Module, checkpoint: Any, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Map a polyhead, torchvision or timm ResNet checkpoint onto ``model``'s state-dict keys.

    The classifier (``fc.*``) is dropped; BN running statistics are kept. A torchvision/timm
    checkpoint fits only the standard width (64). Raises ConfigError naming the detected
    convention and the missing, unexpected and mismatched keys.
    """
    state, notes = unwrap_checkpoint(checkpoint)
    convention = detect_convention(state)
    target = model.state_dict()
    name = type(model).__name__
    width = target["stem.0.weight"].shape[0] if "stem.0.weight" in target else None
    detected = f"keys detected as {convention}" + (f" ({', '.join(notes)})" if notes else "")

    if convention == OURS:
        names = {k: k for k in target}
    else:
        if width != IMAGENET_WIDTH:
            raise ConfigError(
                f"model.weights: {source} holds {REFERENCE} (ImageNet) weights, which fit only "
                f"the standard width {IMAGENET_WIDTH}; this {name} has width {width}. "
                f"Set model.width: {IMAGENET_WIDTH} or drop model.weights ({detected})"
            )
        names = {k: reference_key(k) for k in target}
        state = {k: v for k, v in state.items() if not k.startswith(_DROPPED)}

    mapped: dict[str, torch.Tensor] = {}
    missing, mismatched = [], []
    for ours, theirs in names.items():
        if theirs not in state:
            # pre-0.4 torchvision files have no num_batches_tracked; torch itself fills in 0
            if convention == REFERENCE and ours.endswith("num_batches_tracked"):
                mapped[ours] = torch.zeros_like(target[ours])
            else:
                missing.append(theirs)
            continue
        tensor = state[theirs]
        if tensor.shape != target[ours].shape:
            mismatched.append(
                f"{theirs}: file {tuple(tensor.shape)}, backbone {tuple(target[ours].shape)}"
            )
            continue
        mapped[ours] = tensor
    unexpected = sorted(set(state) - set(names.values()))

    if missing or unexpected or mismatched:
        lines = [
            f"model.weights: {source} does not fit the backbone {name} (width {width}); {detected}"
        ]
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", mismatched),
        ):
            if items:
                more = f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
                lines.append(f"  {label}: {'; '.join(items[:_SHOWN])}{more}")
        guess = _guess_architecture(state) if convention == REFERENCE else None
        if guess is not None and guess != name:
            lines.append(f"  the file looks like {guess}")
        raise ConfigError("\n".join(lines))
    return mapped


def _guess_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """The torchvision ResNet depth a reference-convention state dict looks like, if known."""
    blocks: dict[int, set[int]] = {}
    for key in state:
        m = _LAYER.match(key)
        if m is not None:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    layers = tuple(len(blocks.get(i, ())) for i in range(1, 5))
    bottleneck = any(".conv3." in k for k in state)
    return _KNOWN.get((bottleneck, layers))
