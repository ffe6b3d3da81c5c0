"""Upgrade a published version: the same weights, with its decoded outputs added to the graph.

A version exported before graph decoding has raw outputs only, so the server decodes it on the
CPU. :func:`upgrade_version` appends the decoded outputs (``training.graph_decoding``) and checks
the result: the ONNX checker and contract, raw outputs bit-identical to the original graph's,
and every decoded output equal to the CPU decoder. :func:`publish_upgrade` publishes it as the
next version of the same model (``polyhead export --upgrade REPO/NAME/VERSION``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from serving.manifest import Manifest, version_number
from training.errors import ExportError
from training.graph_decoding import append_decoded_outputs_file, decoded_names
from training.onnx_checks import Agreement, check_decoded, check_onnx, check_same_raw
from training.publish import MANIFEST_FILE, MODEL_FILE, file_sha256, publish_version, staging

if TYPE_CHECKING:
    from training.config import ExportConfig


@dataclass(frozen=True)
class UpgradeResult:
    """The upgraded manifest, and how its graph compares with the original and the CPU."""

    manifest: Manifest
    raw_max_abs_diff: dict[str, float]  # per raw output, against the original graph: 0.0
    decoded: dict[str, Agreement]  # per decoded output, against the CPU decoder


def upgrade_version(src_version_dir: str | Path, dest_dir: str | Path) -> UpgradeResult:
    """Write ``src_version_dir``'s model with decoded outputs, and its manifest, to ``dest_dir``.

    The manifest is the same but for the tasks' ``decoded`` lists and ``onnx_sha256``.

    Args:
        src_version_dir: a version directory (model.onnx, manifest.json) without decoded outputs.
        dest_dir: an empty or missing directory; gets model.onnx and manifest.json.

    Returns:
        The new manifest and the checks' numbers.

    Raises:
        ExportError: a file is missing or does not match its manifest, the version already has
            decoded outputs, ``dest_dir`` is not empty, or a check fails.
        ManifestError: the manifest is invalid.
    """
    src, dest = Path(src_version_dir), Path(dest_dir)
    manifest = read_version(src)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportError(f"{dest} must be an empty or missing directory")
    dest.mkdir(parents=True, exist_ok=True)
    model = dest / MODEL_FILE
    try:
        tasks = append_decoded_outputs_file(src / MODEL_FILE, model, manifest.tasks)
        size = (manifest.input.height, manifest.input.width)
        check_onnx(model, manifest.output_names, size, decoded_names(tasks))
        inputs = check_inputs(manifest)
        raw = check_same_raw(src / MODEL_FILE, model, manifest.output_names, inputs)
        decoded = check_decoded(model, tasks, inputs)
        raw_manifest = manifest.model_dump()
        provenance = {**raw_manifest["provenance"], "onnx_sha256": file_sha256(model)}
        upgraded = Manifest.model_validate(
            {**raw_manifest, "tasks": [t.model_dump() for t in tasks], "provenance": provenance}
        )
        upgraded.dump(dest / MANIFEST_FILE)
    except BaseException:
        for name in (MODEL_FILE, MANIFEST_FILE):
            (dest / name).unlink(missing_ok=True)
        raise
    return UpgradeResult(upgraded, raw, decoded)


def read_version(src: Path) -> Manifest:
    """The manifest of a version that can be upgraded (its model file checked against it)."""
    if not src.is_dir():
        raise ExportError(f"model version not found: {src} is not a directory")
    for name in (MODEL_FILE, MANIFEST_FILE):
        if not (src / name).is_file():
            raise ExportError(f"{src} is not a model version: {name} is missing")
    manifest = Manifest.load(src / MANIFEST_FILE)
    done = [t.name for t in manifest.tasks if t.decoded]
    if done:
        raise ExportError(f"{src} already has decoded outputs (tasks {done}): nothing to upgrade")
    if file_sha256(src / MODEL_FILE) != manifest.provenance.onnx_sha256:
        raise ExportError(f"{src / MODEL_FILE} does not match the sha256 in its manifest")
    return manifest


def check_inputs(manifest: Manifest, seed: int = 0) -> list[np.ndarray]:
    """Input batches for the checks: at batch 1 and 3, Gaussian and normalised random pixels."""
    rng = np.random.default_rng(seed)
    inp = manifest.input
    mean = np.asarray(inp.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(inp.std, np.float32).reshape(1, 3, 1, 1)
    batches = []
    for n in (1, 3):
        shape = (n, 3, inp.height, inp.width)
        batches.append(rng.standard_normal(shape, dtype=np.float32))
        batches.append((rng.random(shape, dtype=np.float32) - mean) / std)
    return batches


def publish_upgrade(version_dir: str | Path) -> tuple[int, Path, UpgradeResult]:
    """Upgrade ``REPO/NAME/VERSION`` and publish it as the next version of ``REPO/NAME``.

    Triton's ``config.pbtxt`` is regenerated with the export settings the version was made
    with (its provenance), or the defaults.

    Returns:
        The new version number, its directory, and the upgrade's numbers.
    """
    version_dir = Path(version_dir)
    if version_number(version_dir.name) is None:
        raise ExportError(
            f"--upgrade takes REPO/NAME/VERSION with VERSION a number >= 1, got {version_dir}"
        )
    repo, name = version_dir.parent.parent, version_dir.parent.name
    manifest = read_version(version_dir)
    if manifest.name != name:
        raise ExportError(
            f"{version_dir}: the manifest names model {manifest.name!r}, not {name!r}"
        )
    settings = _export_settings(manifest)
    with staging(repo, name) as staged:
        result = upgrade_version(version_dir, staged)
        raw = result.manifest.model_dump()
        version, path = publish_version(
            repo,
            name,
            staged,
            lambda v: Manifest.model_validate({**raw, "version": v}),
            settings.max_queue_delay_microseconds,
            tensorrt_precision=None if settings.tensorrt == "off" else settings.tensorrt.upper(),
            warmup=settings.warmup,
        )
    return version, path, result


def _export_settings(manifest: Manifest) -> ExportConfig:
    # imported here: the training config imports the model registries, hence torch
    from pydantic import ValidationError

    from training.config import ExportConfig

    section = manifest.provenance.config.get("export", {})
    try:
        return ExportConfig.model_validate(section)
    except ValidationError as e:
        raise ExportError(f"the version's export settings are invalid: {e}") from e
