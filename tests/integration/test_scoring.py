"""``polyhead score`` end to end: rows vs the /v1 API, corrupt files, SIGKILL and resume, Ray."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from serving.codecs import decode_array
from serving.scoring import prediction_from_row
from tests.conftest import polyhead_cmd
from tests.gateway import ROOT, gateway_server
from tests.images import write_collection, write_corrupt

REPO = ROOT / "model_repo"


def run_score(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*polyhead_cmd(), "score", "--repo", str(REPO), "--model", "scenes", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def read_rows(out: Path) -> tuple[list[dict], object]:
    table = pq.read_table(out)  # pyarrow skips _run.json, _inputs.arrow, _SUCCESS, _lock
    return table.to_pylist(), table.schema


def assert_close(got, want, path: str = "") -> None:
    """Equal, numbers to float tolerance; base64 float16/raw maps compared as arrays."""
    if isinstance(want, dict):
        assert got.keys() == want.keys(), (path, sorted(got), sorted(want))
        if want.get("encoding") in ("float16", "raw") and "data" in want:
            a, b = decode_array(got), decode_array(want)
            assert a.shape == b.shape, path
            if want["encoding"] == "raw":  # class maps
                assert (a == b).mean() > 0.999, path
            else:
                np.testing.assert_allclose(
                    a.astype(np.float32), b.astype(np.float32), atol=2e-3, rtol=2e-3, err_msg=path
                )
            return
        for k in want:
            assert_close(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-5), path
    else:
        assert got == want, path


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    write_collection(root, 500)
    write_corrupt(root / "broken")
    return root


@pytest.fixture(scope="module")
def gateway():
    with gateway_server(REPO, reload_interval_s="0") as (url, _):
        yield url


def v1_predictions(url: str, paths: list[Path], **params: str) -> list[dict]:
    preds = []
    for i in range(0, len(paths), 64):
        chunk = paths[i : i + 64]
        body = {"images": [base64.b64encode(p.read_bytes()).decode() for p in chunk]}
        r = httpx.post(f"{url}/v1/models/scenes/predict", json=body, params=params, timeout=120)
        assert r.status_code == 200, r.text
        preds += r.json()["predictions"]
    return preds


def test_505_rows_5_errors_and_rows_equal_the_v1_api(collection, gateway, cli_env, tmp_path):
    out = tmp_path / "scored"
    proc = run_score(cli_env, "--input", str(collection), "--output", str(out))
    summary = json.loads(proc.stdout)
    assert (summary["rows"], summary["errors"]) == (505, 5)
    assert json.loads((out / "_SUCCESS").read_text())["rows"] == 505

    rows, schema = read_rows(out)
    assert len(rows) == 505
    assert len({r["id"] for r in rows}) == 505
    errors = {r["id"]: r["error"] for r in rows if r["error"]}
    assert sorted(errors) == sorted(
        f"broken/{n}"
        for n in ("empty.png", "truncated.png", "truncated.jpg", "random.jpg", "text.png")
    )
    for row in rows:
        if row["error"]:
            assert row["semseg.map"] is None and row["background.label"] is None
            assert prediction_from_row(row, schema) == {"error": row["error"]}
        else:
            assert (row["model"], row["version"]) == ("scenes", 1)

    good = sorted((r for r in rows if not r["error"]), key=lambda r: r["id"])
    want = v1_predictions(gateway, [collection / r["id"] for r in good])
    for row, prediction in zip(good, want, strict=True):
        assert_close(prediction_from_row(row, schema), prediction, row["id"])


@pytest.mark.parametrize("encoding", ["png", "json"])
def test_other_encodings_and_a_task_subset_equal_the_v1_api(
    collection, gateway, cli_env, tmp_path, encoding
):
    paths = sorted(collection.glob("group1/*"))[:12]
    listing = tmp_path / "list.jsonl"
    listing.write_text(
        "".join(json.dumps({"id": f"x{i}", "path": str(p)}) + "\n" for i, p in enumerate(paths))
    )
    out = tmp_path / "scored"
    run_score(
        cli_env,
        "--input",
        str(listing),
        "--output",
        str(out),
        "--encoding",
        encoding,
        "--tasks",
        "depth,semseg,shapes",
        "--top-k",
        "2",
        "--batch-size",
        "5",
    )
    rows, schema = read_rows(out)
    assert [r["id"] for r in rows] == [f"x{i}" for i in range(12)]
    assert not any(c.startswith(("normals.", "edges.", "background.")) for c in schema.names)
    want = v1_predictions(gateway, paths, encoding=encoding, tasks="depth,semseg,shapes", top_k="2")
    for row, prediction in zip(rows, want, strict=True):
        got = prediction_from_row(row, schema)
        if encoding == "png":  # PNG bytes of the same maps: identical files
            assert got == prediction
        else:
            assert_close(got, prediction)


def _committed(out: Path) -> int:
    return len(list(out.glob("part-*.parquet")))


def test_sigkill_at_random_points_then_resume_gives_exactly_the_uninterrupted_rows(
    collection, cli_env, tmp_path
):
    """Kill -9 during start-up and after random numbers of committed shards (plus a random
    part of a shard's time, so kills land mid-batch and mid-write); then finish the run."""
    args = ["--input", str(collection), "--shard-size", "25", "--batch-size", "8"]
    reference = tmp_path / "reference"
    run_score(cli_env, *args, "--output", str(reference))
    want, _ = read_rows(reference)
    n_shards = len(list(reference.glob("part-*.parquet")))
    assert n_shards == 21

    out = tmp_path / "killed"
    rng = np.random.default_rng(7)
    # the last kill leaves at least 5 shards (125 images) to go: the run cannot finish between
    # the check that it is alive and the kill (it once did, with 2 shards left)
    plan = [0, *sorted(rng.choice(np.arange(1, n_shards - 4), size=4, replace=False).tolist())]
    kills = []
    for target in plan:
        proc = subprocess.Popen(
            [
                *polyhead_cmd(),
                "score",
                "--repo",
                str(REPO),
                "--model",
                "scenes",
                *args,
                "--output",
                str(out),
            ],
            env=cli_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        if target == 0:  # during start-up: listing, loading, the first shard
            time.sleep(rng.uniform(0.3, 1.5))
        else:
            while _committed(out) < target and proc.poll() is None:
                assert time.monotonic() < deadline, "scoring made no progress"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.15))
        assert proc.poll() is None, f"the run finished before kill {len(kills) + 1}: {kills}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append((target, _committed(out)))
    assert not (out / "_SUCCESS").exists()

    proc = run_score(cli_env, *args, "--output", str(out))
    summary = json.loads(proc.stdout)
    assert summary["resumed_shards"] == kills[-1][1] > 0, kills
    got, _ = read_rows(out)
    assert len(got) == len(want) == 505
    assert [r["id"] for r in got] == [r["id"] for r in want]  # one row per input, in order
    for g, w in zip(got, want, strict=True):
        assert g == w, g["id"]
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]

    again = run_score(cli_env, *args, "--output", str(out))
    assert json.loads(again.stdout)["rows"] == 505  # finished: says so, scores nothing
    assert "already complete" in again.stderr


def test_a_changed_command_does_not_resume_another_run(collection, cli_env, tmp_path):
    out = tmp_path / "scored"
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in sorted(collection.glob("group2/*"))[:6]))
    run_score(cli_env, "--input", str(listing), "--output", str(out))
    proc = run_score(
        cli_env, "--input", str(listing), "--output", str(out), "--encoding", "png", check=False
    )
    assert proc.returncode == 2
    assert "holds another run" in proc.stderr and "encoding" in proc.stderr
    run_score(
        cli_env, "--input", str(listing), "--output", str(out), "--encoding", "png", "--overwrite"
    )
    rows, schema = read_rows(out)
    assert len(rows) == 6 and json.loads(schema.metadata[b"polyhead.options"])["encoding"] == "png"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", "/nonexistent/folder"], "input not found"),
        (["--input", "{collection}", "--tasks", "semseg,nope"], "unknown task"),
        (["--input", "{collection}", "--version", "9"], "no version 9"),
        (["--input", "{collection}", "--encoding", "bmp"], "encoding must be one of"),
    ],
)
def test_user_errors_exit_2_with_a_message(collection, cli_env, tmp_path, args, message):
    args = [a.replace("{collection}", str(collection)) for a in args]
    proc = run_score(cli_env, *args, "--output", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_ray_path_gives_the_same_rows_as_the_local_path(collection, cli_env, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is part of make test")
    listing = tmp_path / "list.txt"
    paths = sorted(collection.glob("group3/*"))[:30] + sorted((collection / "broken").glob("*"))[:2]
    listing.write_text("\n".join(str(p) for p in paths))
    local = tmp_path / "local"
    run_score(cli_env, "--input", str(listing), "--output", str(local), "--shard-size", "10")
    on_ray = tmp_path / "ray"
    env = dict(cli_env)
    proc = run_score(
        env,
        "--input",
        str(listing),
        "--output",
        str(on_ray),
        "--shard-size",
        "10",
        "--ray",
        "--workers",
        "2",
        "--batch-size",
        "4",
    )
    assert json.loads(proc.stdout)["engine"] == "ray local"
    want, _ = read_rows(local)
    got, _ = read_rows(on_ray)
    assert [r["id"] for r in got] == [r["id"] for r in want]
    assert sum(1 for r in got if r["error"]) == 2
    for g, w in zip(got, want, strict=True):
        if w["error"]:
            assert g == w
            continue
        for column, value in w.items():
            if column.endswith((".map", ".probability")) and isinstance(value, bytes):
                a = np.frombuffer(g[column], np.uint8 if column == "semseg.map" else "<f2")
                b = np.frombuffer(value, np.uint8 if column == "semseg.map" else "<f2")
                np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)
            else:
                assert_close(g[column], value, column)


def test_progress_lines_when_not_a_terminal(collection, cli_env, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in sorted(collection.glob("group0/*"))[:4]))
    proc = run_score(cli_env, "--input", str(listing), "--output", str(tmp_path / "o"))
    assert "scored 4/4" in proc.stderr and "\r" not in proc.stderr
    assert "4 rows (0 with errors)" in proc.stderr
    assert os.path.exists(tmp_path / "o" / "_SUCCESS")
