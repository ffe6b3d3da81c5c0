"""The fuzz suite's machinery: the gateway under test, sending, judging, counting.

Black-box on purpose: nothing here imports ``serving`` (it is being rewritten), only the
protocol modules ``tritonclient`` ships and ``tests.gateway``'s port helpers.

Every request goes through ``send_http``, ``call_grpc`` / ``call_grpc_stream`` or (raw sockets)
``framing.send_raw``, which count it and judge the answer (the Schemathesis CLI run counts its
own and applies the same error-body check through ``schemathesis_hooks``):
no 5xx (HTTP) and no INTERNAL / UNKNOWN / DATA_LOSS / UNIMPLEMENTED (gRPC), an answer within
the client timeout, every HTTP error a JSON object with an ``error`` string, and no error
message that leaks a traceback, an exception class name or a Python object's repr. A
misbehaviour raises a ``GatewayFault`` whose class is one per distinct signature (the
server-side exception and where it was raised, read from the gateway's log), so Hypothesis
shrinks and reports each distinct failure on its own; ``FAULTS`` keeps the smallest request
seen for each, for the summary at the end of the run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlencode

import grpc
import httpx
import numpy as np
from google.protobuf import text_format
from hypothesis import HealthCheck, Phase, settings
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.gateway import ROOT, free_port, wait_ready

MODEL_REPO = ROOT / "model_repo"
ONNX = MODEL_REPO / "scenes" / "1" / "model.onnx"
MODEL = "scenes"

HTTP_TIMEOUT = 15.0  # seconds; no answer by then is a hang
GRPC_TIMEOUT = 15.0
CHECK_EVERY = 100  # fuzz requests between two good-request checks ("a batch of cases")

# POLYHEAD_FUZZ_SCALE multiplies every example count (1: the default budget, ~3,000 requests)
SCALE = float(os.environ.get("POLYHEAD_FUZZ_SCALE", "1"))
# POLYHEAD_FUZZ_SHRINK=0 skips shrinking (faster red runs, unminimised examples)
SHRINK = os.environ.get("POLYHEAD_FUZZ_SHRINK", "1") != "0"
# POLYHEAD_FUZZ_SERVE_FROM: serve another source tree (e.g. an older commit's, unpacked with
# ``git archive``) to compare; the model repository and the tests stay this tree's
SERVE_FROM = Path(os.environ.get("POLYHEAD_FUZZ_SERVE_FROM", str(ROOT))).resolve()

# Shrinking stops after this many seconds per test (Hypothesis' own bound is 300 s), so a red
# run stays inside the suite's time budget too. Hypothesis has no setting for it; this is the
# engine's module constant, left alone if a future Hypothesis renames it.
SHRINK_SECONDS = float(os.environ.get("POLYHEAD_FUZZ_SHRINK_SECONDS", "10"))
with contextlib.suppress(ImportError, AttributeError):
    from hypothesis.internal.conjecture import engine as _engine

    if hasattr(_engine, "MAX_SHRINKING_SECONDS"):
        _engine.MAX_SHRINKING_SECONDS = SHRINK_SECONDS  # type: ignore[assignment]

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if SHRINK else [])],
)


def examples(n: int) -> settings:
    """The suite's Hypothesis settings with a fixed example count (times POLYHEAD_FUZZ_SCALE)."""
    return settings(FUZZ, max_examples=max(1, round(n * SCALE)))


# ---- counting ---------------------------------------------------------------------------------

COUNTS: Counter[str] = Counter()  # requests sent, by category
ANSWERS: dict[str, Counter[str]] = {}  # status codes (HTTP) or gRPC codes, by category


def answered(category: str, code: object) -> None:
    """Tally one answer."""
    ANSWERS.setdefault(category, Counter())[str(code)] += 1


STARTED = time.monotonic()


@dataclass
class FaultRecord:
    """One distinct failure: the smallest request that triggered it, and its answer."""

    signature: str
    request: str
    response: str
    size: int
    count: int = 0
    tests: set[str] = field(default_factory=set)


FAULTS: dict[str, FaultRecord] = {}
HEALTH_FAILURES: list[str] = []  # good-request checks that failed in the middle of a test


class GatewayFault(AssertionError):
    """The gateway misbehaved; one subclass per distinct signature."""


_FAULT_TYPES: dict[str, type[GatewayFault]] = {}


def fault(signature: str, request: str, response: str, size: int) -> GatewayFault:
    """Record a failure and return the exception to raise (its class names the signature)."""
    cls = _FAULT_TYPES.get(signature)
    if cls is None:
        cls = type(f"GatewayFault{len(_FAULT_TYPES) + 1}", (GatewayFault,), {})
        _FAULT_TYPES[signature] = cls
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].split("::")[-1]
    rec = FAULTS.get(signature)
    if rec is None:
        rec = FAULTS[signature] = FaultRecord(signature, request, response, size)
    elif size < rec.size:
        rec.request, rec.response, rec.size = request, response, size
    rec.count += 1
    rec.tests.add(test)
    return cls(f"{signature}\n  request:  {request}\n  response: {response}")


def fail(signature: str, request: str, response: str, size: int) -> NoReturn:
    """Record and raise a failure.

    Always from this one line, and never while another exception is being handled (callers
    leave their ``except`` first): Hypothesis tells failures apart by exception type, place
    and context, and the type alone (one per signature) should decide.
    """
    raise fault(signature, request, response, size)


def short(data: Any, limit: int = 300) -> str:
    """A bounded repr for reports."""
    text = data if isinstance(data, str) else repr(data)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


# ---- leaks in error messages ------------------------------------------------------------------

_LEAKS = [
    ("a traceback", re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")),
    ("an exception class name", re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception)\b")),
    ("a Python object repr", re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>|<class '")),
    ("a source path", re.compile(r"site-packages|/serving/\w+\.py|\.py\", line")),
]


def leak(message: str) -> str | None:
    """What an error message leaks of the server's internals, if anything."""
    for what, pattern in _LEAKS:
        m = pattern.search(message)
        if m:
            return f"{what} ({m.group(0)!r})"
    return None


# ---- the server's log: which exception a 5xx came from -------------------------------------------

_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?:ERROR|CRITICAL) ([\w.]+): (.*)$")
_ANY_RECORD = re.compile(r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|INFO:|ERROR:|WARNING:|DEBUG:)")
_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)')


def _signature(block: list[str]) -> str:
    """``ExcType at serving/x.py:123 in func: message``, from the last traceback of a log record.

    The innermost frame in the project's code says where; ``server_error`` keeps the type and
    place (one bug, whatever values it was hit with) apart from the message.
    """
    header = _RECORD.match(block[0])
    assert header is not None
    starts = [i for i, line in enumerate(block) if line.startswith("Traceback (most recent")]
    if not starts:
        return f"logged by {header.group(1)}: {short(header.group(2), 120)}"
    tb = block[starts[-1] :]
    where = ""
    for line in tb:
        m = _FRAME.match(line)
        tree = next((t for t in (SERVE_FROM, ROOT) if m and m.group(1).startswith(f"{t}/")), None)
        if m and tree is not None and "/.venv" not in m.group(1):
            where = f" at {Path(m.group(1)).relative_to(tree)}:{m.group(2)} in {m.group(3)}"
    exc = next(
        (
            line.strip()
            for line in reversed(tb)
            if line and not line[0].isspace() and not line.startswith("Traceback")
        ),
        "?",
    )
    exc_type, _, message = exc.partition(": ")
    return f"{exc_type}{where}: {short(message, 160)}"


def error_blocks(text: str) -> list[list[str]]:
    """The ERROR records (with their tracebacks) of a stretch of the gateway's log."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if _RECORD.match(line):
            current = [line]
            blocks.append(current)
        elif _ANY_RECORD.match(line):
            current = None
        elif current is not None:
            current.append(line)
    return blocks


# ---- the gateway ------------------------------------------------------------------------------

GATEWAY_ENV = {
    "POLYHEAD_RELOAD_INTERVAL_S": "0",
    "POLYHEAD_MAX_IMAGES_PER_REQUEST": "8",
    "POLYHEAD_MAX_QUEUE_SIZE": "64",
    "OMP_NUM_THREADS": "2",
}


class Gateway:
    """``polyhead serve`` (HTTP + gRPC, the bundled model_repo) as a subprocess, and clients."""

    def __init__(self, workdir: Path) -> None:
        """Nothing starts before ``start``."""
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log_offset = 0
        self.reference_v1: Any = None

    # lifecycle

    def start(self) -> None:
        """Start the gateway and wait until it is ready; open the clients."""
        self.starts += 1
        self.port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = self.workdir / f"gateway-{self.starts}.log"
        self.log_offset = 0
        env = dict(os.environ)
        env["PYTHONPATH"] = str(SERVE_FROM) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(GATEWAY_ENV)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "polyhead", "serve", "--repo", str(MODEL_REPO)),
                    *("--host", "127.0.0.1", "--port", str(self.port)),
                    *("--grpc-port", str(self.grpc_port)),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=str(self.workdir),
            )
        try:
            wait_ready(self.url, timeout=120, proc=self.proc)
        except (RuntimeError, TimeoutError) as e:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"{e}\ngateway log:\n{tail}") from None
        # a fresh connection for every fuzz request: a connection the server dropped after one
        # request must not make the next (innocent) request fail
        self.http = httpx.Client(
            base_url=self.url,
            timeout=HTTP_TIMEOUT,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self.good_http = httpx.Client(base_url=self.url, timeout=HTTP_TIMEOUT)
        self.channel = grpc.insecure_channel(
            self.target,
            options=[
                ("grpc.max_receive_message_length", 512 * 1024 * 1024),
                ("grpc.max_send_message_length", 512 * 1024 * 1024),
            ],
        )
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.since_check = 0
        self.log_offset = self.log_path.stat().st_size

    def stop(self) -> None:
        """Close the clients and end the process."""
        with contextlib.suppress(Exception):
            self.http.close()
        with contextlib.suppress(Exception):
            self.good_http.close()
        with contextlib.suppress(Exception):
            self.channel.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)

    def alive(self) -> bool:
        """The process is still running."""
        return self.proc is not None and self.proc.poll() is None

    # the log

    def log_tail(self, n: int = 4000) -> str:
        """The end of the gateway's log."""
        with contextlib.suppress(OSError):
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        return ""

    def new_log(self) -> str:
        """The log written since the last call."""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            data = f.read()
        self.log_offset += len(data)
        return data.decode(errors="replace")

    def server_error(self) -> tuple[str, str] | None:
        """(where, message) of the last error the gateway logged since the last call, if any."""
        for attempt in range(3):
            blocks = error_blocks(self.new_log())
            if blocks:
                sig = _signature(blocks[-1])
                where, _, message = sig.partition(": ") if " at " in sig else (sig, "", "")
                return where, message
            time.sleep(0.05 * (attempt + 1))
        return None


# ---- HTTP -------------------------------------------------------------------------------------


@dataclass
class HttpCase:
    """One HTTP request, as the strategies build it."""

    method: str
    path: str
    params: list[tuple[str, str]] | None = None
    headers: dict[str, str | bytes] = field(default_factory=dict)
    content: bytes | None = None
    note: str = ""  # what the strategy meant to build (for reports)

    def __repr__(self) -> str:
        return f"HttpCase<{self.describe()}>"

    def describe(self) -> str:
        """The request, bounded."""
        query = f"?{urlencode(self.params)}" if self.params else ""
        parts = [f"{self.method} {self.path}{query}"]
        if self.headers:
            parts.append(f"headers={short(self.headers, 200)}")
        if self.content is not None:
            parts.append(f"body={short(self.content, 300)} ({len(self.content)} bytes)")
        if self.note:
            parts.append(f"[{self.note}]")
        return " ".join(parts)

    def size(self) -> int:
        """How big the request is (to keep the smallest example of each failure)."""
        return len(self.path) + len(str(self.params or "")) + len(self.content or b"")


def _header_bytes(headers: dict[str, str | bytes]) -> dict[str, bytes]:
    return {k: v if isinstance(v, bytes) else v.encode("utf-8") for k, v in headers.items()}


def send_http(gw: Gateway, category: str, case: HttpCase) -> httpx.Response:
    """Send one fuzz request, count it and judge the answer (raises ``GatewayFault``)."""
    COUNTS[category] += 1
    desc, size = case.describe(), case.size()
    gw.since_check += 1
    error: httpx.TransportError | None = None
    try:
        r = gw.http.request(
            case.method,
            case.path,
            params=case.params,
            headers=_header_bytes(case.headers),
            content=case.content,
        )
    except httpx.TransportError as e:
        error = e
    if isinstance(error, httpx.TimeoutException):
        answered(category, "timeout")
        fail(f"hang: no answer within {HTTP_TIMEOUT:g}s ({category})", desc, "-", size)
    if error is not None:
        answered(category, "connection failed")
        what = "the gateway died" if not gw.alive() else type(error).__name__
        fail(f"connection failed: {what} ({category})", desc, str(error), size)
    answered(category, r.status_code)
    judge_http(gw, category, case, r)
    if gw.since_check >= CHECK_EVERY:
        check_between_batches(gw)
    return r


def judge_http(gw: Gateway, category: str, case: HttpCase, r: httpx.Response) -> None:
    """Raise a ``GatewayFault`` unless the answer is a well-formed non-5xx."""
    judge_answer(
        gw, category, case.describe(), case.size(), case.method, r.status_code, r.headers, r.content
    )


def judge_answer(
    gw: Gateway,
    category: str,
    desc: str,
    size: int,
    method: str,
    status: int,
    headers: Any,
    content: bytes,
) -> None:
    """The checks of one HTTP answer (any client's): no 5xx, JSON errors, no leaks."""
    answer = f"{status} {short(content, 300)}"
    if status >= 500:
        logged = gw.server_error() if status == 500 else None
        if logged:
            signature, answer = f"HTTP {status}: {logged[0]}", f"{answer}; server: {logged[1]}"
        else:
            signature = (
                f"HTTP {status} ({category}): {short(content.decode(errors='replace'), 120)}"
            )
        fail(signature, desc, answer, size)
    ctype = str(headers.get("content-type", ""))
    if status >= 400 and method != "HEAD":  # HEAD answers carry no body
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("error"), str)
            or not body["error"]
        ):
            signature = (
                f"HTTP {status} error body is not JSON with an 'error' string ({category}, {ctype})"
            )
            fail(signature, desc, answer, size)
        leaked = leak(body["error"])
        if leaked:
            fail(f"HTTP {status} error message leaks {leaked}", desc, answer, size)
    elif 200 <= status < 300 and method != "HEAD":
        if ctype.startswith("application/json") and not _parses(content):
            fail(f"HTTP {status} with a broken JSON body", desc, answer, size)
        header_length = headers.get("inference-header-content-length")
        if header_length is not None:
            n = int(header_length) if str(header_length).isdigit() else -1
            if not 0 < n <= len(content) or not _parses(content[:n]):
                fail("binary response with a bad JSON header", desc, answer, size)


def _parses(content: bytes) -> bool:
    try:
        json.loads(content)
    except ValueError:
        return False
    return True


# ---- gRPC -------------------------------------------------------------------------------------

BAD_CODES = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNIMPLEMENTED,
}


def describe_proto(method: str, message: Any) -> str:
    """A gRPC request, bounded."""
    return f"{method}({short(text_format.MessageToString(message, as_one_line=True), 400)})"


def _judge_rpc_error(gw: Gateway, method: str, desc: str, size: int, e: grpc.RpcError) -> None:
    code, details = e.code(), e.details() or ""
    answer = f"{code.name}: {short(details, 300)}"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        fail(f"hang: no gRPC answer within {GRPC_TIMEOUT:g}s ({method})", desc, answer, size)
    if code is grpc.StatusCode.UNAVAILABLE and not gw.alive():
        fail(f"the gateway died ({method})", desc, answer, size)
    if code in BAD_CODES:
        logged = gw.server_error()
        if logged:
            signature, answer = f"gRPC {code.name}: {logged[0]}", f"{answer}; server: {logged[1]}"
        else:
            signature = f"gRPC {code.name} ({method}): {short(details, 120)}"
        fail(signature, desc, answer, size)
    leaked = leak(details)
    if leaked:
        fail(f"gRPC {code.name} message leaks {leaked}", desc, answer, size)


def call_grpc(
    gw: Gateway, category: str, method: str, request: Any, compression: Any = None
) -> Any:
    """Make one unary call, count it and judge the answer; returns the response or the error."""
    COUNTS[category] += 1
    desc, size = describe_proto(method, request), request.ByteSize()
    if compression is not None:
        desc += f" [{compression.name} compressed]"
    gw.since_check += 1
    error: grpc.RpcError | None = None
    try:
        call = getattr(gw.stub, method)
        response = call(request, timeout=GRPC_TIMEOUT, compression=compression)
    except grpc.RpcError as e:
        error = e
    if error is not None:
        answered(category, error.code().name if error.code() else "?")
        _judge_rpc_error(gw, method, desc, size, error)
        response = error
    else:
        answered(category, "OK")
    if gw.since_check >= CHECK_EVERY:
        check_between_batches(gw)
    return response


def call_grpc_stream(gw: Gateway, category: str, requests: list[Any]) -> list[Any]:
    """One ModelStreamInfer stream of ``requests`` (counted as that many requests)."""
    COUNTS[category] += len(requests)
    desc = " | ".join(describe_proto("ModelStreamInfer", r) for r in requests)
    size = sum(r.ByteSize() for r in requests)
    out = []
    gw.since_check += len(requests)
    error: grpc.RpcError | None = None
    try:
        for resp in gw.stub.ModelStreamInfer(iter(requests), timeout=GRPC_TIMEOUT):
            out.append(resp)
            answered(category, "error_message" if resp.error_message else "OK")
    except grpc.RpcError as e:
        error = e
    for resp in out:
        leaked = leak(resp.error_message)
        if leaked:
            fail(f"gRPC stream error_message leaks {leaked}", desc, resp.error_message, size)
    if error is not None:
        answered(category, error.code().name if error.code() else "?")
        _judge_rpc_error(gw, "ModelStreamInfer", desc, size, error)
    if len(out) != len(requests):
        fail(
            "gRPC stream answered fewer requests than it was sent",
            desc,
            f"{len(out)} answers for {len(requests)} requests",
            size,
        )
    return out


# ---- good requests: the gateway still answers, and answers correctly ----------------------------

_REFERENCE: dict[str, Any] = {}


def good_png() -> bytes:
    """A small scene PNG (the model's domain)."""
    if "png" not in _REFERENCE:
        from tests.images import encode, scene_image

        _REFERENCE["png"] = encode(scene_image(7, (96, 80)), "PNG")
    return _REFERENCE["png"]


def good_batch() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A fixed FP32 input and what ONNX Runtime computes for it, run directly."""
    if "x" not in _REFERENCE:
        import onnxruntime as ort

        x = np.random.default_rng(3).standard_normal((1, 3, 128, 128)).astype(np.float32)
        session = ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        _REFERENCE["x"] = x
        _REFERENCE["ref"] = dict(zip(names, session.run(names, {"image": x}), strict=True))
    return _REFERENCE["x"], _REFERENCE["ref"]


def _close(a: Any, b: Any, path: str = "") -> str | None:
    """Where two /v1 answers differ beyond float noise (map data: same length), or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            if k == "data" and isinstance(a[k], str) and isinstance(b[k], str):
                if len(a[k]) != len(b[k]):
                    return f"{path}.data: {len(a[k])} chars != {len(b[k])}"
                continue
            d = _close(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = _close(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, int | float) and isinstance(b, int | float)
        return (
            None if ok and math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-4) else f"{path}: {a} != {b}"
        )
    return None if a == b else f"{path}: {a!r} != {b!r}"


def good_requests(gw: Gateway) -> list[str]:
    """Problems with a good /v1 predict, a v2 FP32 infer (HTTP binary) and a gRPC one."""
    problems: list[str] = []
    if not gw.alive():
        return [f"the gateway process exited with {gw.proc.returncode if gw.proc else '?'}"]
    COUNTS["good-request checks"] += 3
    x, ref = good_batch()
    try:
        r = gw.good_http.post(
            f"/v1/models/{MODEL}/predict", content=good_png(), headers={"content-type": "image/png"}
        )
        if r.status_code != 200:
            problems.append(f"/v1 predict answered {r.status_code} {short(r.text, 200)}")
        else:
            body = r.json()
            if gw.reference_v1 is None:
                gw.reference_v1 = body
            diff = _close(body, gw.reference_v1)
            if diff or len(body["predictions"][0]["tasks"]) != 6:
                problems.append(f"/v1 predict answer changed: {diff}")

        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "FP32",
                        "shape": list(x.shape),
                        "parameters": {"binary_data_size": x.nbytes},
                    }
                ],
                "outputs": [
                    {"name": "shapes"},
                    {"name": "background"},
                    {"name": "depth", "parameters": {"binary_data": True}},
                ],
            }
        ).encode()
        r = gw.good_http.post(
            f"/v2/models/{MODEL}/infer",
            content=header + x.tobytes(),
            headers={
                "inference-header-content-length": str(len(header)),
                "content-type": "application/octet-stream",
            },
        )
        if r.status_code != 200:
            problems.append(f"v2 FP32 infer answered {r.status_code} {short(r.text, 200)}")
        else:
            n = int(r.headers["inference-header-content-length"])
            head = json.loads(r.content[:n])
            outs = {o["name"]: o for o in head["outputs"]}
            got = {
                "shapes": np.array(outs["shapes"]["data"], np.float32).reshape(1, 4),
                "background": np.array(outs["background"]["data"], np.float32).reshape(1, 4),
                "depth": np.frombuffer(r.content[n:], np.float32).reshape(1, 1, 128, 128),
            }
            for name, value in got.items():
                if not np.allclose(value, ref[name], rtol=1e-4, atol=1e-4):
                    problems.append(f"v2 FP32 infer: {name} differs from ONNX Runtime")
    except (httpx.HTTPError, KeyError, ValueError) as e:
        problems.append(f"HTTP good request failed: {type(e).__name__}: {e}")
    try:
        req = pb.ModelInferRequest(model_name=MODEL)
        req.inputs.add(name="image", datatype="FP32", shape=list(x.shape))
        req.raw_input_contents.append(x.tobytes())
        req.outputs.add(name="shapes")
        resp = gw.stub.ModelInfer(req, timeout=GRPC_TIMEOUT)
        value = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(1, 4)
        if not np.allclose(value, ref["shapes"], rtol=1e-4, atol=1e-4):
            problems.append("gRPC FP32 infer: shapes differs from ONNX Runtime")
    except (grpc.RpcError, IndexError, ValueError) as e:
        problems.append(f"gRPC good request failed: {e}")
    gw.since_check = 0
    return problems


def check_between_batches(gw: Gateway) -> None:
    """Good requests after a batch of cases; a failure is kept for the test's teardown."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    HEALTH_FAILURES.extend(f"{test} (mid-run): {p}" for p in good_requests(gw))


def workdir() -> Path:
    """A scratch directory for the gateway's logs."""
    return Path(tempfile.mkdtemp(prefix="polyhead-fuzz-"))
