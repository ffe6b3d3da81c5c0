"""The README's examples, run as a newcomer runs them.

Every code block of README.md is either an example, marked ``<!-- example: PATH -->`` and equal
to the script at PATH, or a block marked ``<!-- shown: why -->`` (the two set-up commands, an
installation), or a JSON response. Each example script then runs here from a folder laid out
like the repository (samples, configs, the bundled model), against a real gateway on
127.0.0.1; the only edits are the gateway's address and, for the training pipeline, a budget of
seconds instead of 25 minutes, each asserted to apply.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.gateway import gateway_process

README = ROOT / "README.md"
DEFAULT_ADDRESS = "127.0.0.1:8000"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
MARKER = re.compile(r"<!-- (example|shown): (.+?) -->\s*$")


def readme_blocks() -> list[tuple[str, str, str | None, str | None]]:
    """(language, text, marker kind, marker value) of every fenced block of the README."""
    text = README.read_text()
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        blocks.append((m.group(1), m.group(2), *(marker.groups() if marker else (None, None))))
    return blocks


EXAMPLES = [value for _, _, kind, value in readme_blocks() if kind == "example"]


def test_every_readme_block_is_a_checked_example_or_says_why_not():
    blocks = readme_blocks()
    assert len(EXAMPLES) >= 6
    for language, text, kind, value in blocks:
        if kind == "example":
            assert value is not None
            assert (ROOT / value).read_text() == text, f"README block differs from {value}"
        else:
            assert kind == "shown" or language == "json", f"unmarked block:\n{text[:200]}"
    responses = [json.loads(text) for language, text, _, _ in blocks if language == "json"]
    assert responses, "the README shows a response"  # shortened with "...", still valid JSON


@pytest.fixture(scope="module")
def gateway():
    with gateway_process(ROOT / "model_repo") as url:
        yield url


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder where the README's relative paths resolve as in a checkout."""
    for name in ("serving", "configs", "model_repo"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def run_example(path: str, cwd: Path, replacements: dict[str, str], timeout: float = 120) -> str:
    """Run an example script with ``replacements`` applied (each must occur); its stdout."""
    text = (ROOT / path).read_text()
    for old, new in replacements.items():
        assert old in text, f"{path} no longer contains {old!r}"
        text = text.replace(old, new)
    script = cwd / Path(path).name
    script.write_text(text)
    command = [sys.executable, str(script)] if path.endswith(".py") else ["bash", "-e", str(script)]
    done = subprocess.run(
        command, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{path} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def json_values(text: str) -> list:
    """The JSON documents printed one after another (curl -s adds no newline)."""
    decoder, values, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        value, i = decoder.raw_decode(text, i)
        values.append(value)
    return values


def address(url: str) -> dict[str, str]:
    return {DEFAULT_ADDRESS: url.removeprefix("http://")}


def test_the_curl_example_predicts_every_task(gateway, workdir):
    (body,) = json_values(run_example("docs/examples/predict.sh", workdir, address(gateway)))
    assert body["model"] == "scenes"
    (prediction,) = body["predictions"]
    assert list(prediction["tasks"]) == body["tasks"] and len(body["tasks"]) == 6


def test_the_other_ways_to_send_images(gateway, workdir):
    out = run_example("docs/examples/predict_more.sh", workdir, address(gateway))
    two, png, base64_json = json_values(out)
    assert len(two["predictions"]) == 2
    assert all(set(p["tasks"]) == {"semseg", "background"} for p in two["predictions"])
    assert png["predictions"][0]["tasks"]["depth"]["map"]["encoding"] == "png"
    assert base64_json["predictions"][0]["tasks"]["background"]["label"]


def test_the_python_example(gateway, workdir):
    out = run_example("docs/examples/predict.py", workdir, address(gateway))
    label_line, depth_line = out.strip().splitlines()
    assert label_line.split()[0] in {"stripes", "checker", "noise", "gradient"}
    assert depth_line.startswith("(128, 128)") and depth_line.endswith(" m")


def test_the_tritonclient_example(gateway, workdir):
    out = run_example("docs/examples/v2_client.py", workdir, address(gateway))
    shape, label = out.strip().splitlines()
    assert shape == "(1, 128, 128)"
    assert label.startswith("[[b'")


def test_the_scoring_examples_with_an_unreadable_image(workdir):
    photos = workdir / "photos"
    photos.mkdir()
    for sample in sorted((ROOT / "serving/api/static/samples").glob("*.png")):
        shutil.copy(sample, photos / sample.name)
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    run_example("docs/examples/score.sh", workdir, {})
    out = run_example("docs/examples/read_scores.py", workdir, {})
    lines = out.strip().splitlines()
    assert len(lines) == len(list(photos.iterdir()))
    (error,) = [line for line in lines if "error:" in line]
    assert error.startswith("broken.png error:")
    assert sum(" mean depth " in line for line in lines) == len(lines) - 1


@pytest.mark.slow
def test_the_training_pipeline_then_serving_its_repository(workdir):
    budget = {
        "--n 2000 --size 128": "--n 24 --size 32",
        "--out runs/scenes\n": "--out runs/scenes --set optim.epochs=1 --set optim.batch_size=8\n",
    }
    run_example("docs/examples/pipeline.sh", workdir, budget, timeout=600)
    assert (workdir / "my_repo/scenes/1/model.onnx").is_file()
    assert not (ROOT / "model_repo/scenes/2").exists()  # the bundled repository is left alone
    with gateway_process(workdir / "my_repo") as url:
        import httpx

        sample = (ROOT / "serving/api/static/samples/scene-0.png").read_bytes()
        r = httpx.post(f"{url}/v1/models/scenes/predict", files={"file": sample}, timeout=30)
        assert r.status_code == 200, r.text
