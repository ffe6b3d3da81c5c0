"""Publish a model version into a Triton-layout model repository, atomically.

``repo/NAME/VERSION/{model.onnx, manifest.json}`` appears in one ``rename`` of a fully written,
fsynced staging directory (a hidden sibling, which Triton and our repository ignore because its
name is not an integer), so a reader never sees half a version. ``repo/NAME/config.pbtxt`` is
then regenerated from the new manifest and replaced atomically too.

:func:`staging` checks the model name first and, if anything fails before the version is
published, removes what it created: the staging directory, and the model folder (and repository)
if they did not exist. Every version of a model takes one input size: Triton serves a model's
versions with its one ``config.pbtxt`` (:func:`check_input_size`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from serving.manifest import Manifest, ManifestError, check_model_name, version_number
from serving.manifest.triton_config import config_from_manifest, to_pbtxt
from training.checkpoint import fsync_dir
from training.errors import ExportError

log = logging.getLogger(__name__)

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


@contextlib.contextmanager
def staging(repo: Path, name: str) -> Iterator[Path]:
    """A staging directory for the next version of ``repo/name`` (see :func:`staging_dir`).

    The name is checked before anything is written. If the body raises, the staging directory
    is removed, then every folder up to the model's that this call created, if empty.
    """
    check_model_name(name)
    created = []
    folder = Path(repo) / name
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    staged = staging_dir(Path(repo), name)
    try:
        yield staged
    except BaseException:
        discard(staged)
        for folder in created:  # the model folder first, then its parents
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def check_input_size(model_dir: Path, size: tuple[int, int], force: bool = False) -> None:
    """Refuse a new version whose input size (H, W) differs from the versions beside it.

    Publishing rewrites the model's ``config.pbtxt`` for the new version's input, and Triton
    serves every version of a model with that one config. ``force`` publishes anyway, warning.

    Raises:
        ExportError: another version takes another size and ``force`` is false.
    """
    by_size: dict[str, list[int]] = {}
    for version in existing_versions(model_dir):
        try:
            inp = Manifest.load(model_dir / str(version) / MANIFEST_FILE).input
        except ManifestError:
            continue  # an unreadable version is the server's to report, not a size to compare
        if (inp.height, inp.width) != tuple(size):
            by_size.setdefault(f"{inp.width}x{inp.height}", []).append(version)
    if not by_size:
        return
    others = "; ".join(
        f"version {vs[0]} takes {s}" if len(vs) == 1 else f"versions {_listed(vs)} take {s}"
        for s, vs in by_size.items()
    )
    message = (
        f"the new version of {model_dir} takes {size[1]}x{size[0]} images, but {others}: "
        f"export rewrites {model_dir / CONFIG_FILE} for the new version, and under Triton that "
        "config no longer fits the older ones; publish under another --name, or pass --force"
    )
    if not force:
        raise ExportError(message)
    log.warning("%s (publishing anyway: --force)", message.partition("; publish under")[0])


def _listed(versions: list[int]) -> str:
    return ", ".join(map(str, versions))


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
