"""The output directory of a scoring run: exactly once, resumable.

```
DIR/_run.json              what the run is: model, version, tasks, options, shard size, inputs
DIR/_inputs.arrow          the input list (id, path) in order, as enumerated at the first start
DIR/part-000000.parquet    rows of inputs [0, S), then [S, 2S), ... (S = shard size)
DIR/_SUCCESS               written last: counts (JSON)
```
Each shard is written to a temporary file, fsynced, and renamed into place (then the directory
is fsynced), so a shard is either absent or complete. Its footer records which inputs it holds
(start, stop, the run's input digest) and its error count; a re-run reads those footers, skips
committed shards and scores the rest of the saved input list. Reading the directory with
pyarrow, pandas or Spark (they skip ``_`` files), or ``DIR/*.parquet`` anywhere, gives the rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from serving.errors import BadRequest
from serving.scoring.sources import InputList

RUN_FILE = "_run.json"
INPUTS_FILE = "_inputs.arrow"  # not .parquet: a *.parquet glob must see only rows
SUCCESS_FILE = "_SUCCESS"
LOCK_FILE = "_lock"
SHARD_KEY = b"polyhead.shard"


class OutputError(BadRequest):
    """The output directory holds another run, is in use, or cannot be written."""


@dataclass(frozen=True)
class RunRecord:
    """What a run is; a re-run with another record in the same directory is refused."""

    source: str  # --input as given
    extensions: list[str] | None  # what a folder scan takes (None: every file)
    model: str
    version: int
    tasks: list[str]
    options: dict[str, Any]  # encoding, resolution, max_side, top_k
    shard_size: int
    inputs: int = 0
    inputs_sha256: str = ""

    def differences(self, other: RunRecord) -> list[str]:
        """Settings that differ, as ``name: ours != theirs`` (the input list is not compared)."""
        a, b = asdict(self), asdict(other)
        keys = [k for k in a if k not in ("inputs", "inputs_sha256")]
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in keys if a[k] != b[k]]


def inputs_digest(inputs: InputList) -> str:
    """sha256 of the ordered (id, path) list."""
    h = hashlib.sha256()
    for i, p in zip(inputs.ids, inputs.paths, strict=True):
        h.update(i.encode())
        h.update(b"\0")
        h.update(p.encode())
        h.update(b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class Shard:
    """Inputs [start, stop) of the run, written as one file."""

    number: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        """The file name."""
        return f"part-{self.number:06d}.parquet"


def shards_of(n_inputs: int, shard_size: int) -> list[Shard]:
    """The run's shards: consecutive ranges of ``shard_size`` inputs."""
    return [
        Shard(k, start, min(start + shard_size, n_inputs))
        for k, start in enumerate(range(0, n_inputs, shard_size))
    ]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, write: Any) -> None:
    """``write(tmp_path)``, fsync, rename to ``path``, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


class OutputDir:
    """One run's directory: claim it, find what is committed, commit shards, finish."""

    def __init__(self, root: Path) -> None:
        """Use ``root`` (created if missing)."""
        self.root = Path(root)
        self._lock_fd: int | None = None

    # ---- ownership -----------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[OutputDir]:
        """Hold the directory's lock: a second scorer on the same directory is refused.

        A directory this call created is removed again if the run fails before writing to it.
        """
        created = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"cannot use {self.root} as the output: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"{self.root} is being written by another scoring process") from None
        self._lock_fd = fd
        try:
            yield self
        except BaseException:
            if created and [p.name for p in self.root.iterdir()] == [LOCK_FILE]:
                (self.root / LOCK_FILE).unlink()
                self.root.rmdir()
            raise
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._lock_fd = None

    def clear(self) -> None:
        """Remove a previous run's files (``--overwrite``); only files this layout writes."""
        self._remove_temporaries()
        for p in self.root.iterdir():
            ours = p.name in (RUN_FILE, INPUTS_FILE, SUCCESS_FILE) or (
                p.name.startswith("part-") and p.name.endswith(".parquet")
            )
            if ours and p.is_file():
                p.unlink()

    def _remove_temporaries(self) -> None:
        for p in self.root.iterdir():
            if p.name.startswith(".") and ".tmp-" in p.name and p.is_file():
                p.unlink()

    # ---- the run -------------------------------------------------------------------------

    def existing_record(self) -> RunRecord | None:
        """The record of the run in this directory, if one was started."""
        path = self.root / RUN_FILE
        if not path.exists():
            return None
        try:
            return RunRecord(**json.loads(path.read_text()))
        except (ValueError, TypeError) as e:
            raise OutputError(
                f"{path} is unreadable ({e}); use --overwrite or another --output"
            ) from e

    def begin(self, record: RunRecord, inputs: InputList) -> None:
        """Start a new run here: save the input list, then the record (which makes it exist)."""
        self._remove_temporaries()
        leftovers = [p.name for p in self.root.iterdir() if p.name.startswith("part-")]
        if leftovers:
            raise OutputError(
                f"{self.root} holds shards but no {RUN_FILE}; use --overwrite or another --output"
            )
        table = pa.table({"id": inputs.ids, "path": inputs.paths})
        write_atomically(self.root / INPUTS_FILE, lambda p: feather.write_feather(table, p))
        write_atomically(
            self.root / RUN_FILE, lambda p: p.write_text(json.dumps(asdict(record), indent=2))
        )

    def saved_inputs(self, record: RunRecord) -> InputList:
        """The input list saved when the run began (checked against the record's digest)."""
        self._remove_temporaries()
        path = self.root / INPUTS_FILE
        try:
            table = feather.read_table(path)
            inputs = InputList(
                [str(v) for v in table.column("id").to_pylist()],
                [str(v) for v in table.column("path").to_pylist()],
            )
        except Exception as e:  # missing or unreadable: this run cannot be resumed
            raise OutputError(
                f"cannot resume: {path} is missing or unreadable ({e}); use --overwrite"
            ) from e
        if inputs_digest(inputs) != record.inputs_sha256:
            raise OutputError(f"cannot resume: {path} does not match {RUN_FILE}; use --overwrite")
        return inputs

    def committed(self, shards: list[Shard], digest: str) -> dict[int, int]:
        """Shards already committed by this run: number -> error count.

        A shard file whose footer does not match the run (another run's, or damaged) is
        removed, to be written again.
        """
        done: dict[int, int] = {}
        for shard in shards:
            path = self.root / shard.name
            if not path.exists():
                continue
            try:
                meta = pq.read_metadata(path)
                info = json.loads((meta.metadata or {})[SHARD_KEY])
                valid = (
                    info["run"] == digest
                    and (info["start"], info["stop"]) == (shard.start, shard.stop)
                    and meta.num_rows == shard.stop - shard.start
                )
            except Exception:  # unreadable footer: not a shard of ours
                valid = False
            if valid:
                done[shard.number] = int(info["errors"])
            else:
                path.unlink()
        return done

    def commit(self, shard: Shard, table: pa.Table, digest: str) -> int:
        """Write ``table`` (the shard's rows, in input order) atomically; returns its errors."""
        if table.num_rows != shard.stop - shard.start:
            raise RuntimeError(
                f"shard {shard.number} has {table.num_rows} rows, "
                f"expected {shard.stop - shard.start}"
            )
        errors = table.num_rows - table.column("error").null_count
        info = {"run": digest, "start": shard.start, "stop": shard.stop, "errors": errors}
        metadata = {**(table.schema.metadata or {}), SHARD_KEY: json.dumps(info).encode()}
        table = table.replace_schema_metadata(metadata)
        write_atomically(self.root / shard.name, lambda p: pq.write_table(table, p))
        return errors

    def finish(self, summary: dict[str, Any]) -> None:
        """Write ``_SUCCESS`` with the run's counts."""
        write_atomically(
            self.root / SUCCESS_FILE, lambda p: p.write_text(json.dumps(summary, indent=2) + "\n")
        )

    def success(self) -> dict[str, Any] | None:
        """The counts of a finished run, or None."""
        path = self.root / SUCCESS_FILE
        return json.loads(path.read_text()) if path.exists() else None
