"""Schemathesis against the running gateway's /openapi.json (the `schemathesis run` CLI).

The CLI, not the pytest plugin: schemathesis 4.32's ``from_fixture`` integration touches
``Function._nodeid``, which pytest 9.2 no longer has. Every documented operation except
unloading a model (which would take the model away from the rest of the suite) gets the
examples, coverage and fuzzing phases, with a fixed seed and a fixed number of fuzzing
examples per operation; model names and versions come from a small dictionary part of the
time so that requests get past the 404. Checks: no 5xx, the status code, content type and
response body the document declares, and the suite's own (``schemathesis_hooks``): errors are
JSON ``{"error": ...}`` that leak nothing.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.fuzz import harness

pytestmark = pytest.mark.timeout(300)

FUZZING_EXAMPLES = max(1, round(20 * harness.SCALE))
SEED = 20260
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "errors_are_json_without_leaks",  # tests/fuzz/schemathesis_hooks.py
]
CONFIG = f"""
seed = {SEED}
request-timeout = {harness.HTTP_TIMEOUT}
workers = 1
continue-on-failure = true

[cache]
enabled = false

[generation]
mode = "all"
max-examples = {FUZZING_EXAMPLES}
database = "none"

[phases.stateful]
enabled = false

[checks]
enabled = false
{"".join(f"{name} = {{ enabled = true }}{chr(10)}" for name in CHECKS)}
[dictionaries.models]
values = ["{harness.MODEL}", "nope"]

[dictionaries.versions]
values = ["1", "2", "0", "²", "١", "01"]

[parameters]
name = {{ dictionary = "models", probability = 0.7 }}
version = {{ dictionary = "versions", probability = 0.5 }}
"""


def _failure_sections(output: str) -> dict[str, str]:
    """The CLI's FAILURES section, by operation."""
    m = re.search(r"=+ FAILURES =+\n(.*?)\n=+ (?:WARNINGS|SUMMARY|ERRORS) =+", output, re.S)
    if not m:
        return {}
    sections = {}
    for block in re.split(r"\n(?=_{3,} )", "\n" + m.group(1)):
        head = re.match(r"\s*_{3,} (.+?) _{3,}\n", block)
        if head:
            sections[head.group(1)] = block[head.end() :]
    return sections


def test_openapi_schemathesis(gateway, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    count_file = tmp_path / "count"
    env = dict(os.environ)
    env.update(
        SCHEMATHESIS_HOOKS="tests.fuzz.schemathesis_hooks",
        PYTHONPATH=str(harness.ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        POLYHEAD_FUZZ_COUNT_FILE=str(count_file),
    )
    cmd = [
        *(sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(config)),
        *("run", f"{gateway.url}/openapi.json", "--exclude-path-regex", "/unload$"),
        *("--report", "json", "--report-dir", str(tmp_path / "report")),
    ]
    started = gateway.log_path.stat().st_size
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    sent = int(count_file.read_text()) if count_file.exists() else 0
    harness.COUNTS["schemathesis"] += sent
    gateway.since_check += sent
    reports = list((tmp_path / "report").glob("*.json"))
    assert reports, (
        f"schemathesis wrote no report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    report = json.loads(reports[0].read_text())
    assert report["complete"], f"schemathesis stopped early: {report['stop_reason']}"

    # server-side exceptions behind any 5xx, from the gateway's log
    with open(gateway.log_path, "rb") as f:
        f.seek(started)
        logged = f.read().decode(errors="replace")
    gateway.log_offset = gateway.log_path.stat().st_size
    server_errors = sorted({harness._signature(b) for b in harness.error_blocks(logged)})

    sections = _failure_sections(proc.stdout)
    problems = []
    for failure in report["failures"]:
        for operation in failure["operations"]:
            cases = re.split(r"\n(?=\d+\. Test Case ID)", sections.get(operation, ""))
            detail = next((c for c in cases if f"- {failure['code']} " in c), "")
            curl = re.search(r"^\s*(curl .+)$", detail, re.M)
            answer = re.search(r"^\[(\d{3})\][^\n]*\n\n\s*(.+)$", detail, re.M)
            signature = f"schemathesis {failure['code']} {failure['title']} on {operation}"
            harness.fault(
                signature,
                curl.group(1) if curl else operation,
                f"{answer.group(1)} {answer.group(2)[:300]}" if answer else "-",
                len(curl.group(1)) if curl else 0,
            )
            problems.append(signature)
    for error in report["errors"]:
        problems.append(f"schemathesis error: {harness.short(error, 300)}")
    assert not problems and not server_errors, (
        f"{len(problems)} Schemathesis failures in {report['test_cases']['generated']} cases; "
        f"server-side errors logged: {server_errors}\n"
        + "\n".join(problems)
        + "\n\n"
        + "\n".join(f"--- {op}\n{text[:1500]}" for op, text in sections.items())
    )
    assert sent > 0, "the hooks module counted no requests"
