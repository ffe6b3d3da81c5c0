"""Scoring inputs (folders, globs, list files) and the exactly-once output directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.scoring.output import (
    OutputDir,
    OutputError,
    RunRecord,
    inputs_digest,
    shards_of,
)
from serving.scoring.sources import InputList, SourceError, list_inputs


def touch(root: Path, *names: str) -> None:
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"x")


def test_folder_is_recursive_sorted_and_takes_only_images(tmp_path):
    touch(tmp_path, "b.png", "a/c.JPG", "a/z.jpeg", "notes.txt", ".hidden.png", ".cache/d.png")
    found = list_inputs(str(tmp_path))
    assert found.ids == ["a/c.JPG", "a/z.jpeg", "b.png"]
    assert found.paths == [str(tmp_path / i) for i in found.ids]
    assert list_inputs(str(tmp_path), None).ids == ["a/c.JPG", "a/z.jpeg", "b.png", "notes.txt"]


def test_glob_takes_what_matches(tmp_path):
    touch(tmp_path, "x/1.png", "x/y/2.png", "x/3.jpg")
    found = list_inputs(str(tmp_path / "x" / "**" / "*.png"))
    assert found.paths == [str(tmp_path / "x/1.png"), str(tmp_path / "x/y/2.png")]
    assert found.ids == found.paths


def test_txt_list_resolves_relative_paths_against_its_folder(tmp_path):
    touch(tmp_path, "imgs/a.png")
    (tmp_path / "list.txt").write_text("# a comment\nimgs/a.png\n\n/abs/b.png\n")
    found = list_inputs(str(tmp_path / "list.txt"))
    assert found.ids == ["imgs/a.png", "/abs/b.png"]
    assert found.paths == [str(tmp_path / "imgs/a.png"), "/abs/b.png"]


def test_jsonl_and_parquet_lists_with_and_without_ids(tmp_path):
    (tmp_path / "l.jsonl").write_text('{"path": "a.png", "id": 7}\n\n{"path": "b.png"}\n')
    found = list_inputs(str(tmp_path / "l.jsonl"))
    assert found.ids == ["7", "b.png"]
    pq.write_table(
        pa.table({"path": ["a.png", "b.png"], "id": ["k1", None]}), tmp_path / "l.parquet"
    )
    found = list_inputs(str(tmp_path / "l.parquet"))
    assert found.ids == ["k1", "b.png"] and found.paths[0] == str(tmp_path / "a.png")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("l.jsonl", '{"id": 1}\n', "needs a string field 'path'"),
        ("l.jsonl", "not json\n", "not JSON"),
        ("l.txt", "a.png\na.png\n", "duplicate id"),
        ("l.txt", "# nothing\n", "no input found"),
        ("l.csv", "a.png\n", "must end with .txt, .jsonl or .parquet"),
    ],
)
def test_bad_lists_are_refused_with_a_message(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(SourceError, match=message):
        list_inputs(str(tmp_path / name))


def test_parquet_without_a_path_column_is_refused(tmp_path):
    pq.write_table(pa.table({"file": ["a.png"]}), tmp_path / "l.parquet")
    with pytest.raises(SourceError, match="needs a 'path' column"):
        list_inputs(str(tmp_path / "l.parquet"))


def test_missing_source_is_refused(tmp_path):
    with pytest.raises(SourceError, match="input not found"):
        list_inputs(str(tmp_path / "nope"))


# ---- output directory ------------------------------------------------------------------------


INPUTS = InputList([f"i{k}" for k in range(7)], [f"/p/{k}.png" for k in range(7)])


def record(**changes) -> RunRecord:
    base = dict(
        source="src",
        extensions=None,
        model="m",
        version=1,
        tasks=["a"],
        options={"encoding": "float16"},
        shard_size=3,
        inputs=7,
        inputs_sha256=inputs_digest(INPUTS),
    )
    return RunRecord(**{**base, **changes})


def rows(start: int, stop: int, errors: int = 0) -> pa.Table:
    return pa.table(
        {
            "id": [f"i{k}" for k in range(start, stop)],
            "error": ["bad" if k - start < errors else None for k in range(start, stop)],
        }
    )


def test_shards_cover_every_input_once():
    shards = shards_of(7, 3)
    assert [(s.start, s.stop) for s in shards] == [(0, 3), (3, 6), (6, 7)]
    assert shards[2].name == "part-000002.parquet"


def test_commit_is_atomic_and_found_again_on_resume(tmp_path):
    out = OutputDir(tmp_path)
    shards = shards_of(7, 3)
    digest = inputs_digest(INPUTS)
    with out.locked():
        out.begin(record(), INPUTS)
        assert out.commit(shards[1], rows(3, 6, errors=2), digest) == 2
        assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
        assert out.committed(shards, digest) == {1: 2}
        assert out.saved_inputs(record()) == INPUTS
    # another run's shard, or one with the wrong range, is not taken as committed
    assert OutputDir(tmp_path).committed(shards, "another-run") == {}
    assert not (tmp_path / shards[1].name).exists()


def test_a_shard_with_the_wrong_row_count_is_never_written(tmp_path):
    out = OutputDir(tmp_path)
    with pytest.raises(RuntimeError, match="expected 3"):
        out.commit(shards_of(7, 3)[0], rows(0, 2), "d")
    assert not list(tmp_path.glob("part-*"))


def test_a_different_run_in_the_same_directory_is_reported(tmp_path):
    assert record(options={"encoding": "png"}).differences(record()) == [
        "options: {'encoding': 'png'} != {'encoding': 'float16'}"
    ]
    assert record(inputs=3, inputs_sha256="x").differences(record()) == []


def test_shards_without_a_run_record_are_refused(tmp_path):
    (tmp_path / "part-000000.parquet").write_bytes(b"x")
    with OutputDir(tmp_path).locked() as out, pytest.raises(OutputError, match=r"no _run\.json"):
        out.begin(record(), INPUTS)


def test_saved_inputs_must_match_the_record(tmp_path):
    with OutputDir(tmp_path).locked() as out:
        out.begin(record(), INPUTS)
        with pytest.raises(OutputError, match="does not match"):
            out.saved_inputs(record(inputs_sha256="0" * 64))


def test_one_scorer_per_directory(tmp_path):
    with (
        OutputDir(tmp_path).locked(),
        pytest.raises(OutputError, match="another scoring process"),
        OutputDir(tmp_path).locked(),
    ):
        pass


def test_overwrite_clears_only_files_of_the_layout(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with OutputDir(tmp_path).locked() as out:
        out.begin(record(), INPUTS)
        out.commit(shards_of(7, 3)[0], rows(0, 3), inputs_digest(INPUTS))
        out.finish({"rows": 7})
        out.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_lock", "mine.txt"]


def test_leftover_temporaries_are_removed_on_begin(tmp_path):
    (tmp_path / f".part-000000.parquet.tmp-{os.getpid() + 1}").write_bytes(b"half")
    with OutputDir(tmp_path).locked() as out:
        out.begin(record(), INPUTS)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert json.loads((tmp_path / "_run.json").read_text())["inputs"] == 7
