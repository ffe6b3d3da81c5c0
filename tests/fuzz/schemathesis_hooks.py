"""Loaded by the Schemathesis CLI (SCHEMATHESIS_HOOKS) in the fuzz suite's OpenAPI run.

A check beyond Schemathesis' own (errors are JSON ``{"error": "..."}`` and leak no traceback,
exception class name or object repr), and a count of the requests sent, written at exit to
the file named by POLYHEAD_FUZZ_COUNT_FILE.
"""

from __future__ import annotations

import atexit
import json
import os

import schemathesis

from tests.fuzz.harness import leak

_SENT = [0]


@schemathesis.check
def errors_are_json_without_leaks(ctx, response, case):
    """A 4xx/5xx body is a JSON object with a non-empty 'error' string that leaks nothing."""
    if response.status_code < 400 or case.method.upper() == "HEAD":
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
        raise AssertionError(
            f"error body is not JSON with an 'error' string: {response.content[:200]!r}"
        )
    leaked = leak(body["error"])
    if leaked:
        raise AssertionError(f"error message leaks {leaked}: {body['error'][:200]!r}")
    return True


@schemathesis.hook
def after_call(context, case, response):
    """Count every request Schemathesis sends."""
    _SENT[0] += 1


def _write_count() -> None:
    path = os.environ.get("POLYHEAD_FUZZ_COUNT_FILE")
    if path:
        with open(path, "w") as f:
            f.write(str(_SENT[0]))


atexit.register(_write_count)
