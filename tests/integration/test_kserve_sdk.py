"""The gateway's Open Inference Protocol (KServe v2) driven by the KServe Python SDK.

``kserve.InferenceRESTClient`` and ``kserve.InferenceGRPCClient`` against one gateway subprocess
with HTTP and gRPC. The SDK cannot live in this process (its ``inference`` protobuf package
collides with tritonclient's, and its pins would downgrade the dev environment), so it runs in
``.venv-kserve`` (``make install-kserve-test``) behind ``tests/kserve_sdk_worker.py``. Every
result is checked against ONNX Runtime running the same ``model.onnx`` directly; for encoded
images, on the pixels ``serving.preprocess`` makes of them, or normalised here by hand.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pickle
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import onnxruntime as ort
import pytest

from serving.manifest import InputSpec, Manifest
from serving.preprocess import preprocess
from tests.gateway import ROOT, free_port, gateway_server
from tests.images import encode, scene_image

BUNDLED = ROOT / "model_repo"
VERSION = max(
    (p for p in (BUNDLED / "scenes").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
)
ONNX = VERSION / "model.onnx"
SPEC: InputSpec = Manifest.load(VERSION / "manifest.json").input
RAW = ["semseg", "depth", "normals", "edges", "shapes", "background"]
KSERVE_VENV = Path(os.environ.get("POLYHEAD_TEST_KSERVE_VENV", ROOT / ".venv-kserve"))
WORKER = ROOT / "tests" / "kserve_sdk_worker.py"
TOL = {"rtol": 1e-5, "atol": 1e-5}
# encoded images: (format, (width, height)); the model's size, larger, smaller, not square
IMAGES = [("JPEG", (160, 120)), ("PNG", (128, 128)), ("PNG", (96, 128))]


class SdkError(Exception):
    """An exception the SDK raised in the worker: its type, message and HTTP/gRPC code."""

    def __init__(self, kind: str, message: str, code: Any) -> None:
        super().__init__(f"{kind} ({code}): {message}")
        self.kind, self.message, self.code = kind, message, code


class Sdk:
    """The KServe SDK worker's pipes: ``sdk(op, **arguments)`` returns the operation's result."""

    def __init__(self, proc: subprocess.Popen[bytes], log: IO[str]) -> None:
        self._proc, self._log = proc, log

    def __call__(self, op: str, **arguments: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        data = pickle.dumps({"op": op, **arguments}, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._proc.stdin.write(struct.pack("<I", len(data)) + data)
            self._proc.stdin.flush()
            head = self._proc.stdout.read(4)
            reply = pickle.loads(self._proc.stdout.read(struct.unpack("<I", head)[0]))
        except (OSError, struct.error, EOFError) as e:
            self._log.seek(0)
            raise RuntimeError(f"KServe SDK worker died: {e}\n{self._log.read()[-4000:]}") from e
        if "error" in reply:
            raise SdkError(reply["error"], reply["message"], reply["code"])
        return reply["ok"]


@contextlib.contextmanager
def sdk_worker(rest: str, grpc_target: str) -> Iterator[Sdk]:
    """``tests/kserve_sdk_worker.py`` in the KServe environment, for one gateway."""
    python = KSERVE_VENV / "bin" / "python"
    if not python.exists():
        raise RuntimeError(
            f"no KServe SDK environment at {KSERVE_VENV}: run `make install-kserve-test` "
            "(part of `make test`)"
        )
    with (
        tempfile.TemporaryFile("w+") as log,
        subprocess.Popen(
            [str(python), "-I", str(WORKER), rest, grpc_target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        ) as proc,
    ):
        try:
            yield Sdk(proc, log)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()  # end of requests: the worker closes its clients and exits
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def sdk() -> Iterator[Sdk]:
    grpc_port = free_port()
    with (
        gateway_server(BUNDLED, grpc_port=str(grpc_port), reload_interval_s="0") as (url, _),
        sdk_worker(url, f"127.0.0.1:{grpc_port}") as client,
    ):
        yield client


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])


def _ref(session: ort.InferenceSession, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every raw output of the graph for the FP32 batch ``x``."""
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {SPEC.name: x}), strict=True))


def _x(n: int, seed: int) -> np.ndarray:
    return (
        np.random.default_rng(seed)
        .standard_normal((n, 3, SPEC.height, SPEC.width))
        .astype(np.float32)
    )


def _images(n: int, seed: int) -> list[bytes]:
    """``n`` encoded scene images, cycling through ``IMAGES``' formats and sizes."""
    return [
        encode(scene_image(seed + i, IMAGES[i % len(IMAGES)][1]), IMAGES[i % len(IMAGES)][0])
        for i in range(n)
    ]


def _expected(session: ort.InferenceSession, images: list[bytes]) -> dict[str, np.ndarray]:
    """ONNX Runtime on the model inputs ``serving.preprocess`` makes of ``images``."""
    x = np.stack([preprocess(data, SPEC, max_pixels=10**8)[0] for data in images])
    return _ref(session, x)


def _check(result: dict[str, Any], ref: dict[str, np.ndarray], names: list[str] = RAW) -> None:
    assert result["order"] == names
    for name in names:
        assert result["datatypes"][name] == "FP32"
        np.testing.assert_allclose(result["outputs"][name], ref[name], **TOL, err_msg=name)


def _bytes_input(images: list[bytes], **how: Any) -> dict[str, Any]:
    """The ``image_bytes`` input, BYTES [N,1]: one encoded image per row."""
    return {"name": "image_bytes", "shape": [len(images), 1], "datatype": "BYTES", **how}


def _base64_input(images: list[bytes]) -> dict[str, Any]:
    """``image_bytes`` as pure JSON: base64 text, marked by MLServer's ``content_type``."""
    data = [base64.b64encode(i).decode() for i in images]
    return _bytes_input(images, data=data, parameters={"content_type": "base64"})


# ---- health and metadata ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_health(sdk: Sdk, transport: str) -> None:
    assert sdk("health", transport=transport, model="scenes") == {
        "live": True,
        "ready": True,
        "model_ready": True,
    }
    assert sdk("health", transport=transport, model="nope")["model_ready"] is False


def test_metadata_rest_and_grpc(sdk: Sdk, session: ort.InferenceSession) -> None:
    rest = sdk("metadata", transport="rest", model="scenes")
    grpc = sdk("metadata", transport="grpc", model="scenes")
    assert rest == grpc
    assert rest["server"]["name"] == "polyhead"
    model = rest["model"]
    assert model["name"] == "scenes" and model["versions"] == [VERSION.name]
    inputs = {i["name"]: i for i in model["inputs"]}
    assert inputs[SPEC.name] == {
        "name": SPEC.name,
        "datatype": "FP32",
        "shape": [-1, 3, SPEC.height, SPEC.width],
    }
    assert inputs["image_bytes"]["datatype"] == "BYTES"
    outputs = {o["name"]: o for o in model["outputs"]}
    onnx = {o.name: o for o in session.get_outputs()}
    for name in RAW:  # the graph's own outputs, the batch dimension -1
        shape = [d if isinstance(d, int) else -1 for d in onnx[name].shape]
        assert outputs[name] == {"name": name, "datatype": "FP32", "shape": shape}
    datatypes = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(uint8)": "UINT8"}
    for name, o in onnx.items():  # decoded outputs fused into the graph: the same datatype
        assert outputs[name]["datatype"] == datatypes[o.type], name
    with pytest.raises(SdkError) as e:
        sdk("metadata", transport="rest", model="nope")
    assert e.value.code == 404
    with pytest.raises(SdkError) as e:
        sdk("metadata", transport="grpc", model="nope")
    assert e.value.code == "NOT_FOUND"


# ---- FP32 tensors against ONNX Runtime ---------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("n", [1, 3])
def test_rest_fp32_equals_onnxruntime(
    sdk: Sdk, session: ort.InferenceSession, n: int, binary: bool
) -> None:
    """``binary``: the binary tensor extension both ways; else JSON ``data`` both ways."""
    x = _x(n, seed=n)
    inp = {
        "name": SPEC.name,
        "shape": list(x.shape),
        "datatype": "FP32",
        "array": x,
        "binary": binary,
    }
    r = sdk(
        "infer",
        transport="rest",
        model="scenes",
        inputs=[inp],
        outputs=RAW,
        binary_outputs=binary,
        request_id=f"rest-{n}",
    )
    assert r["id"] == f"rest-{n}" and r["model_name"] == "scenes"
    _check(r, _ref(session, x))


@pytest.mark.parametrize("raw", [True, False], ids=["raw_input_contents", "fp32_contents"])
@pytest.mark.parametrize("n", [1, 3])
def test_grpc_fp32_equals_onnxruntime(
    sdk: Sdk, session: ort.InferenceSession, n: int, raw: bool
) -> None:
    x = _x(n, seed=10 + n)
    inp = {"name": SPEC.name, "shape": list(x.shape), "datatype": "FP32", "array": x, "binary": raw}
    r = sdk("infer", transport="grpc", model="scenes", inputs=[inp], request_id=f"grpc-{n}")
    assert r["id"] == f"grpc-{n}" and r["model_version"] == VERSION.name
    _check(r, _ref(session, x))  # no outputs named: every raw output, in the graph's order


def test_output_subset_in_request_order(sdk: Sdk, session: ort.InferenceSession) -> None:
    x = _x(2, seed=5)
    inp = {"name": SPEC.name, "shape": list(x.shape), "datatype": "FP32", "array": x}
    for transport in ("rest", "grpc"):
        r = sdk(
            "infer", transport=transport, model="scenes", inputs=[inp], outputs=["shapes", "depth"]
        )
        _check(r, _ref(session, x), ["shapes", "depth"])


# ---- encoded images against ONNX Runtime -------------------------------------------------------


@pytest.mark.parametrize("raw", [True, False], ids=["raw_input_contents", "bytes_contents"])
@pytest.mark.parametrize("n", [1, 3])
def test_grpc_encoded_images(sdk: Sdk, session: ort.InferenceSession, n: int, raw: bool) -> None:
    """``set_data_from_numpy`` sends raw_input_contents; a ``data`` list, bytes_contents."""
    images = _images(n, seed=20 + n)
    if raw:
        inp = _bytes_input(images, array=np.array(images, dtype=object).reshape(n, 1))
    else:
        inp = _bytes_input(images, data=images)
    r = sdk("infer", transport="grpc", model="scenes", inputs=[inp], outputs=RAW)
    _check(r, _expected(session, images))


@pytest.mark.parametrize("n", [1, 3])
def test_rest_encoded_images_binary_extension(
    sdk: Sdk, session: ort.InferenceSession, n: int
) -> None:
    images = _images(n, seed=30 + n)
    inp = _bytes_input(images, array=np.array(images, dtype=object).reshape(n, 1), binary=True)
    r = sdk("infer", transport="rest", model="scenes", inputs=[inp], outputs=RAW)
    _check(r, _expected(session, images))


@pytest.mark.parametrize("n", [1, 3])
def test_rest_encoded_images_base64_json(sdk: Sdk, session: ort.InferenceSession, n: int) -> None:
    """Pure JSON: base64 ``data`` with ``"content_type": "base64"`` on the input."""
    images = _images(n, seed=40 + n)
    r = sdk("infer", transport="rest", model="scenes", inputs=[_base64_input(images)], outputs=RAW)
    _check(r, _expected(session, images))


def test_rest_bytes_without_content_type_are_utf8_text(sdk: Sdk) -> None:
    """Triton's rule: JSON BYTES are UTF-8 text, so base64 unmarked is no image (a 400)."""
    images = _images(1, seed=50)
    inp = _bytes_input(images, data=[base64.b64encode(images[0]).decode()])
    with pytest.raises(SdkError) as e:
        sdk("infer", transport="rest", model="scenes", inputs=[inp], outputs=["shapes"])
    assert e.value.code == 400 and "image" in e.value.message


@pytest.mark.parametrize("way", ["grpc-fp32", "grpc-bytes", "rest-binary", "rest-base64"])
def test_png_at_model_size_equals_its_fp32_tensor(
    sdk: Sdk, session: ort.InferenceSession, way: str
) -> None:
    """A lossless image at the model's size, normalised here by hand: no resize to disagree on."""
    img = scene_image(60, (SPEC.width, SPEC.height))
    pixels = np.asarray(img, dtype=np.float64)
    x = (pixels * SPEC.scale - np.asarray(SPEC.mean)) / np.asarray(SPEC.std)
    x = x.transpose(2, 0, 1)[None].astype(np.float32)
    png = encode(img, "PNG")
    inp = {
        "grpc-fp32": {"name": SPEC.name, "shape": list(x.shape), "datatype": "FP32", "array": x},
        "grpc-bytes": _bytes_input([png], array=np.array([[png]], dtype=object)),
        "rest-binary": _bytes_input([png], array=np.array([[png]], dtype=object)),
        "rest-base64": _base64_input([png]),
    }[way]
    transport = way.split("-")[0]
    r = sdk("infer", transport=transport, model="scenes", inputs=[inp], outputs=RAW)
    _check(r, _ref(session, x))


# ---- what the SDK puts on the wire (the facts the tests above rely on) -----------------------


def test_sdk_wire_format(sdk: Sdk) -> None:
    images = _images(2, seed=70)
    array = np.array(images, dtype=object).reshape(2, 1)
    prefixed = b"".join(struct.pack("<I", len(i)) + i for i in images)
    # REST, set_data_from_numpy: the binary tensor extension, Triton's length-prefixed BYTES
    w = sdk("wire", transport="rest", model="scenes", inputs=[_bytes_input(images, array=array)])
    (header,) = w["json"]["inputs"]
    assert "data" not in header and header["parameters"] == {"binary_data_size": len(prefixed)}
    assert w["binary"] == prefixed
    # REST, a data list: JSON strings as given, the input's parameters passed through
    w = sdk("wire", transport="rest", model="scenes", inputs=[_base64_input(images)])
    (header,) = w["json"]["inputs"]
    assert header["parameters"] == {"content_type": "base64"} and w["binary"] == b""
    assert [base64.b64decode(d) for d in header["data"]] == images
    # REST JSON of raw image bytes: refused by the SDK itself (not UTF-8)
    with pytest.raises(SdkError, match="UTF-8"):
        sdk(
            "wire",
            transport="rest",
            model="scenes",
            inputs=[_bytes_input(images, array=array, binary=False)],
        )
    # gRPC, set_data_from_numpy: raw_input_contents, with binary_data_size as an int64 parameter
    w = sdk("wire", transport="grpc", model="scenes", inputs=[_bytes_input(images, array=array)])
    assert w["raw_input_contents"] == [prefixed]
    assert w["inputs"][0]["parameters"] == {"binary_data_size": ("int64_param", len(prefixed))}
    # gRPC, a data list: bytes_contents, one element per image
    w = sdk("wire", transport="grpc", model="scenes", inputs=[_bytes_input(images, data=images)])
    assert w["raw_input_contents"] == [] and w["inputs"][0]["bytes_contents"] == images
