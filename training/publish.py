"""Publish a model version into a Triton-layout model repository, atomically.

``repo/NAME/VERSION/{model.onnx, manifest.json}`` appears in one ``rename`` of a fully written,
fsynced staging directory (a hidden sibling, which Triton and our repository ignore because its
name is not an integer), so a reader never sees half a version. ``repo/NAME/config.pbtxt`` is
then regenerated from the new manifest and replaced atomically too.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from serving.manifest import Manifest, version_number
from serving.manifest.triton_config import config_from_manifest, to_pbtxt
from training.checkpoint import fsync_dir
from training.errors import ExportError

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.pbtxt"


def existing_versions(model_dir: Path) -> list[int]:
    """Integer-named version directories of a model, sorted."""
    if not model_dir.is_dir():
        return []
    return sorted(
        v for p in model_dir.iterdir() if p.is_dir() and (v := version_number(p.name)) is not None
    )


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file (the manifest's ``onnx_sha256``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def staging_dir(repo: Path, name: str) -> Path:
    """A fresh hidden directory inside ``repo/name`` to write a version into before publishing."""
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=model_dir, prefix=".staging-"))
    staged.chmod(0o755)  # mkdtemp makes it private; servers often run as another user
    return staged


def _fsync_tree(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(path)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def publish_version(
    repo: Path,
    name: str,
    staged: Path,
    make_manifest: Callable[[int], Manifest],
    max_queue_delay_microseconds: int = 2000,
    tensorrt_precision: str | None = None,
    warmup: bool = True,
) -> tuple[int, Path]:
    """Move ``staged`` (holding model.onnx) into ``repo/name/<next version>``.

    ``make_manifest(version)`` builds the manifest for the version number finally taken; if
    another publisher takes that number first, the next one is tried. Returns the version and
    its directory.
    """
    model_dir = repo / name
    if not (staged / MODEL_FILE).is_file():
        raise ExportError(f"nothing to publish: {staged / MODEL_FILE} is missing")
    for _ in range(100):
        version = (existing_versions(model_dir) or [0])[-1] + 1
        manifest = make_manifest(version)
        manifest.dump(staged / MANIFEST_FILE)
        for f in staged.iterdir():
            f.chmod(0o644)
        _fsync_tree(staged)
        target = model_dir / str(version)
        if target.exists():
            continue
        try:
            os.rename(staged, target)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue  # lost a race with another publisher: take the next number
            raise ExportError(f"could not publish {target}: {e}") from e
        fsync_dir(model_dir)
        config = config_from_manifest(
            manifest,
            max_queue_delay_microseconds=max_queue_delay_microseconds,
            tensorrt_precision=tensorrt_precision,
            warmup=warmup,
        )
        _write_atomic(model_dir / CONFIG_FILE, to_pbtxt(config))
        return version, target
    raise ExportError(f"could not find a free version number under {model_dir}")


def discard(staged: Path) -> None:
    """Remove a staging directory that will not be published."""
    shutil.rmtree(staged, ignore_errors=True)
