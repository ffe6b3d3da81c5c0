"""What to score: a folder (recursive), a glob, or a list file (.txt, .jsonl, .parquet).

Every source becomes one ordered list of inputs, each an ``id`` (unique: the key of the output
row) and a ``path``. The order is deterministic (sorted for folders and globs, file order for
lists), so a re-run enumerates the same list and resumes where the last one stopped.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from serving.errors import BadRequest

#: File name endings a folder scan takes (case-insensitive); other files are not images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_GLOB_CHARS = set("*?[")


class SourceError(BadRequest):
    """The input source is missing, malformed, or lists an id twice."""


@dataclass(frozen=True)
class InputList:
    """The inputs of a run, in order: ``ids[i]`` names the image at ``paths[i]``."""

    ids: list[str]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def list_inputs(source: str, extensions: tuple[str, ...] | None = IMAGE_EXTENSIONS) -> InputList:
    """Enumerate ``source``: a folder, a glob pattern, or a .txt/.jsonl/.parquet list.

    Folder: every file below it (hidden ones skipped) whose name ends with one of
    ``extensions`` (None: every file), id = the path relative to the folder. Glob: every file
    that matches (``**`` recurses), id = the path as matched. Lists: one path per line (.txt;
    blank lines and lines starting with ``#`` skipped), or a ``path`` field/column with an
    optional ``id`` (.jsonl, .parquet); relative paths are relative to the list file's folder,
    and id defaults to the path as written.
    """
    path = Path(source)
    if path.is_dir():
        return _from_folder(path, extensions)
    if path.is_file():
        suffix = path.suffix.lower()
        readers = {".txt": _from_txt, ".jsonl": _from_jsonl, ".parquet": _from_parquet}
        if suffix not in readers:
            raise SourceError(
                f"{source}: a list file must end with .txt, .jsonl or .parquet "
                "(or give a folder or a glob)"
            )
        ids, paths = readers[suffix](path)
        return _checked(ids, [_resolve(p, path.parent) for p in paths], source)
    if _GLOB_CHARS & set(source):
        matches = sorted(m for m in glob.glob(source, recursive=True) if os.path.isfile(m))
        return _checked(list(matches), list(matches), source)
    raise SourceError(f"input not found: {source} (a folder, a glob, or a list file)")


def _from_folder(root: Path, extensions: tuple[str, ...] | None) -> InputList:
    wanted = tuple(e.lower() for e in extensions) if extensions else None
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if f.startswith(".") or (wanted and not f.lower().endswith(wanted)):
                continue
            found.append(os.path.relpath(os.path.join(dirpath, f), root))
    found.sort()
    ids = [Path(f).as_posix() for f in found]
    return _checked(ids, [str(root / f) for f in found], str(root))


def _from_txt(path: Path) -> tuple[list[str], list[str]]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    paths = [ln for ln in lines if ln and not ln.startswith("#")]
    return list(paths), paths


def _from_jsonl(path: Path) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    paths: list[str] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SourceError(f"{path}:{n}: not JSON: {e.msg}") from e
            if not isinstance(record, dict) or not isinstance(record.get("path"), str):
                raise SourceError(f"{path}:{n}: each line needs a string field 'path'")
            paths.append(record["path"])
            ids.append(str(record.get("id", record["path"])))
    return ids, paths


def _from_parquet(path: Path) -> tuple[list[str], list[str]]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        columns = [c for c in ("path", "id") if c in schema.names]
        if "path" not in columns:
            raise SourceError(f"{path}: needs a 'path' column (it has {schema.names})")
        table = pq.read_table(path, columns=columns)
    except SourceError:
        raise
    except Exception as e:  # pyarrow raises several of its own types for unreadable files
        raise SourceError(f"{path}: not a readable Parquet file: {e}") from e
    paths = [str(p) for p in table.column("path").to_pylist()]
    if any(p in ("None", "") for p in paths):
        raise SourceError(f"{path}: the 'path' column has empty values")
    if "id" in columns:
        given = table.column("id").to_pylist()
        ids = [p if i is None else str(i) for i, p in zip(given, paths, strict=True)]
    else:
        ids = list(paths)
    return ids, paths


def _resolve(p: str, base: Path) -> str:
    return p if os.path.isabs(p) else str(base / p)


def _checked(ids: list[str], paths: list[str], source: str) -> InputList:
    if not ids:
        raise SourceError(f"{source}: no input found")
    if len(set(ids)) != len(ids):
        dupes = [i for i, n in Counter(ids).items() if n > 1]
        raise SourceError(
            f"{source}: {len(dupes)} duplicate id(s), e.g. {dupes[:3]}; every input needs its own"
        )
    return InputList(ids, paths)
