"""The v2 wire types and codecs, with no server: round trips, framing, every check's message."""

from __future__ import annotations

import base64
import gzip
import struct
import zlib

import numpy as np
import orjson
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import serialize_byte_tensor

from serving.api.v2.binary import deserialize_bytes, from_bytes, serialize_bytes, to_bytes
from serving.api.v2.grpc_codec import CONTENTS, parse_request, render_response
from serving.api.v2.http_codec import (
    from_json,
    inflate,
    parse_infer_request,
    render_infer_response,
    to_json_data,
)
from serving.api.v2.wire import (
    DATATYPES,
    MAX_ELEMENTS,
    InferRequest,
    InferResponse,
    Tensor,
    check_shape,
    datatype_of,
    parse_version,
)
from serving.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from serving.manifest import version_number

FIXED = [d for d in DATATYPES if d != "BYTES"]


def _sample(datatype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        out = np.empty(shape, dtype=object)
        for i in np.ndindex(shape):
            out[i] = bytes(rng.integers(0, 256, size=int(rng.integers(0, 9)), dtype=np.uint8))
        return out
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


# ---- binary ------------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_binary_round_trip_every_datatype(datatype):
    array = _sample(datatype, (2, 3, 4))
    raw = to_bytes(Tensor("x", datatype, array))
    back = from_bytes("x", datatype, [2, 3, 4], raw)
    assert back.shape == array.shape
    assert datatype_of(back) == datatype
    if datatype == "BYTES":
        assert back.tolist() == array.tolist()
    else:
        np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("datatype", FIXED)
def test_non_contiguous_arrays_are_sent_row_major(datatype):
    array = _sample(datatype, (4, 6))
    view = array.T[::2]  # neither C- nor F-contiguous
    assert not view.flags.c_contiguous
    raw = to_bytes(Tensor("x", datatype, view))
    np.testing.assert_array_equal(from_bytes("x", datatype, list(view.shape), raw), view)


def test_bytes_framing_matches_tritonclient():
    array = np.array([b"", b"a", b"\x00\xff" * 300, b"text"], dtype=object)
    ours = serialize_bytes(array)
    assert ours == serialize_byte_tensor(array).item()
    assert deserialize_bytes("x", ours, 4).tolist() == array.tolist()


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (b"\x01\x00\x00", 1, "at least 4 bytes"),
        (struct.pack("<I", 5) + b"abc", 1, "declares 5 bytes, only 3 remain"),
        (struct.pack("<I", 1) + b"ab", 1, "1 bytes left over"),
        (struct.pack("<I", 0xFFFFFFFF), 1, "declares 4294967295"),
        (b"", 2, "at least 8 bytes"),
    ],
)
def test_bytes_framing_errors(raw, count, message):
    with pytest.raises(BadRequest, match=message):
        deserialize_bytes("x", raw, count)


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FP32", [2], b"\x00" * 7, "needs 8 bytes, got 7"),
        ("FP32", [2], b"\x00" * 9, "needs 8 bytes, got 9"),
        ("BOOL", [1], b"\x02", "0 or 1"),
        ("FP8", [1], b"\x00", "'datatype' must be one of"),
        (None, [1], b"\x00", "'datatype' must be one of"),
        ("FP32", None, b"", "'shape' must be a list"),
        ("FP32", "1,2", b"", "'shape' must be a list"),
        ("FP32", [1.0], b"", "'shape' must be a list of integers"),
        ("FP32", [True], b"", "'shape' must be a list of integers"),
        ("FP32", [-1, 2], b"", "negative"),
        ("FP32", [0, 1 << 40], b"", "too large"),
        ("FP32", [1 << 20, 1 << 20], b"", "too large"),
        ("FP32", [1] * 17, b"", "dimensions"),
    ],
)
def test_binary_tensor_errors_name_the_field(datatype, shape, raw, message):
    with pytest.raises(BadRequest, match=message):
        from_bytes("x", datatype, shape, raw)


def test_zero_element_tensors_are_fine():
    assert from_bytes("x", "FP32", [0, 3], b"").shape == (0, 3)
    assert from_json("x", "FP32", [3, 0], []).shape == (3, 0)
    assert check_shape("x", []) == ()
    assert check_shape("x", [MAX_ELEMENTS]) == (MAX_ELEMENTS,)


# ---- versions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1", "12", "007"])
def test_ascii_versions(text):
    assert parse_version(text) == int(text) == version_number(text)


@pytest.mark.parametrize("text", ["0", "-1", "+1", "1.0", " 1", "١", "²", "1٢", "𝟙", "1" * 19, "x"])
def test_other_versions_are_refused(text):
    assert version_number(text) is None
    with pytest.raises(BadRequest, match="ASCII digits"):
        parse_version(text)


# ---- JSON --------------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", FIXED)
def test_json_round_trip_every_fixed_datatype(datatype):
    array = _sample(datatype, (3, 2))
    if datatype == "FP16":
        array = array.astype(np.float16)
    data = to_json_data(Tensor("x", datatype, array))
    back = from_json("x", datatype, [3, 2], orjson.loads(orjson.dumps(data)))
    np.testing.assert_array_equal(back, array)


def test_json_nested_and_flat_data_mean_the_same():
    flat = from_json("x", "INT32", [2, 2], [1, 2, 3, 4])
    nested = from_json("x", "INT32", [2, 2], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(flat, nested)


def test_json_bytes_are_utf8_text_unless_base64():
    payload = b"\x89PNG\r\n\x1a\n\x00\xff"
    assert from_json("x", "BYTES", [1], ["héllo"]).tolist() == ["héllo".encode()]
    text = base64.b64encode(payload).decode()
    assert from_json("x", "BYTES", [1], [text], "base64").tolist() == [payload]
    with pytest.raises(BadRequest, match="not valid base64"):
        from_json("x", "BYTES", [1], ["not base64!"], "base64")
    with pytest.raises(BadRequest, match="BYTES inputs only"):
        from_json("x", "FP32", [1], [1.0], "base64")
    with pytest.raises(BadRequest, match="content_type must be"):
        from_json("x", "BYTES", [1], ["a"], "image/png")


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("FP32", [2], [1.0], "needs 2 elements, data has 1"),
        ("FP32", [1], 1.0, "'data' must be a list"),
        ("FP32", [1], ["a"], "must be numbers"),
        ("FP32", [1], [True], "must be numbers"),
        ("INT32", [1], [1.5], "must be integers"),
        ("UINT8", [1], [256], "do not fit"),
        ("INT64", [1], [1 << 63], "do not fit"),
        ("BOOL", [1], [1], "true/false"),
        ("BYTES", [1], [1], "must be strings"),
        ("FP32", [1], [None], "must be numbers"),
    ],
)
def test_json_tensor_errors(datatype, shape, data, message):
    with pytest.raises(BadRequest, match=message):
        from_json("x", datatype, shape, data)


def _body(inputs, **extra) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


IMG = {"name": "image", "datatype": "FP32", "shape": [1, 2]}


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b"", None, "empty body"),
        (b"[1]", None, "JSON object"),
        (b"{", None, "not valid JSON"),
        (_body([]), None, "non-empty list"),
        (_body([1]), None, r"inputs\[0\] must be an object"),
        (_body([{"datatype": "FP32", "shape": [1], "data": [1]}]), None, "'name'"),
        (_body([{"name": "image", "datatype": "FP32", "data": [1.0]}]), None, "no 'shape'"),
        (_body([{**IMG, "shape": None, "data": [1, 2]}]), None, "'shape' must be a list"),
        (_body([{**IMG, "shape": 2, "data": [1, 2]}]), None, "'shape' must be a list"),
        (_body([{**IMG}]), None, "neither 'data' nor binary_data_size"),
        (_body([{**IMG, "data": [1, 2]}, {**IMG, "data": [1, 2]}]), None, "twice"),
        (_body([{**IMG, "data": [1, 2], "parameters": [1]}]), None, "parameters must be"),
        (
            _body([{**IMG, "data": [1, 2], "parameters": {"a": [1]}}]),
            None,
            "string, number or boolean",
        ),
        (
            _body([{**IMG, "data": [1, 2], "parameters": {"shared_memory_region": "r"}}]),
            None,
            "shared memory",
        ),
        (_body([{**IMG, "data": [1, 2]}], id=3), None, "'id' must be a string"),
        (_body([{**IMG, "data": [1, 2]}], outputs={}), None, "'outputs' must be a list"),
        (_body([{**IMG, "data": [1, 2]}], outputs=[{"x": 1}]), None, r"outputs\[0\]"),
        (
            _body([{**IMG, "data": [1, 2]}], parameters={"binary_data_output": 1}),
            None,
            "binary_data_output",
        ),
        (_body([{**IMG, "data": [1, 2]}]), "x", "must be an integer"),
        (_body([{**IMG, "data": [1, 2]}]), "١٢", "must be an integer"),
        (_body([{**IMG, "data": [1, 2]}]), "100000", "but the body has"),
        (_body([{**IMG, "parameters": {"binary_data_size": 8}}]), None, "runs past the end"),
    ],
)
def test_http_request_errors_name_the_field(body, header, message):
    with pytest.raises(BadRequest, match=message):
        parse_infer_request(body, header, "m", None)


def test_http_binary_request_and_response_round_trip():
    x = _sample("FP32", (1, 2))
    names = np.array([b"a", b"bc"], dtype=object)
    head = _body(
        [
            {**IMG, "parameters": {"binary_data_size": 8}},
            {
                "name": "n",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": 11},
            },
        ],
        outputs=[{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}],
    )
    body = head + x.tobytes() + serialize_bytes(names)
    req = parse_infer_request(body, str(len(head)), "m", "2")
    np.testing.assert_array_equal(req.inputs[0].array, x)
    assert req.inputs[1].array.tolist() == [b"a", b"bc"]
    assert req.binary("y") and not req.binary("z")
    y = Tensor("y", "FP16", np.arange(6, dtype=np.float16).reshape(2, 3))
    z = Tensor("z", "INT32", np.array([[1, -2]], dtype=np.int32))
    content, n = render_infer_response(InferResponse("m", "2", [y, z], "id"), req)
    header = orjson.loads(content[:n])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 12
    assert header["outputs"][1]["data"] == [1, -2]
    np.testing.assert_array_equal(np.frombuffer(content[n:], np.float16).reshape(2, 3), y.array)


def test_binary_sizes_must_cover_the_body():
    head = _body([{**IMG, "parameters": {"binary_data_size": 8}}])
    with pytest.raises(BadRequest, match="follow the JSON header"):
        parse_infer_request(head + b"\x00" * 12, str(len(head)), "m", None)


# ---- compressed bodies ---------------------------------------------------------------------------


def test_gzip_members_are_all_inflated():
    body = gzip.compress(b'{"a":') + gzip.compress(b"1}")
    assert inflate(body, "gzip", 1000) == b'{"a":1}'
    assert inflate(zlib.compress(b"xyz"), "deflate", 1000) == b"xyz"
    assert inflate(b"plain", None, 10) == b"plain"


@pytest.mark.parametrize(
    ("body", "encoding", "error", "message"),
    [
        (gzip.compress(b"x") + b"junk", "gzip", BadRequest, "trailing data"),
        (zlib.compress(b"x") + b"junk", "deflate", BadRequest, "trailing data"),
        (gzip.compress(b"x" * 100)[:-6], "gzip", BadRequest, "truncated"),
        (b"\x1f\x8bnot gzip", "gzip", BadRequest, "not valid gzip"),
        (gzip.compress(b"x" * 5000), "gzip", PayloadTooLarge, "exceeds the limit of 1000"),
        (gzip.compress(b"x" * 600) * 2, "gzip", PayloadTooLarge, "exceeds the limit of 1000"),
        (b"x", "br", UnsupportedMediaType, "Content-Encoding"),
    ],
)
def test_bad_compressed_bodies(body, encoding, error, message):
    with pytest.raises(error, match=message):
        inflate(body, encoding, 1000)


# ---- gRPC --------------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_grpc_raw_and_typed_contents_agree(datatype):
    array = _sample(datatype, (2, 3))
    raw = pb.ModelInferRequest(model_name="m")
    raw.inputs.add(name="x", datatype=datatype, shape=[2, 3])
    raw.raw_input_contents.append(to_bytes(Tensor("x", datatype, array)))
    got = parse_request(raw).inputs[0].array
    if datatype == "FP16":
        np.testing.assert_array_equal(got, array)
        return
    typed = pb.ModelInferRequest(model_name="m")
    t = typed.inputs.add(name="x", datatype=datatype, shape=[2, 3])
    getattr(t.contents, CONTENTS[datatype]).extend(array.ravel().tolist())
    via_typed = parse_request(typed).inputs[0].array
    assert via_typed.tolist() == got.tolist() == array.tolist()


def _grpc(**kw) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    t = req.inputs.add(name="x", datatype=kw.get("datatype", "FP32"), shape=kw.get("shape", [2]))
    if "typed" in kw:
        t.contents.fp32_contents.extend(kw["typed"])
    if "int" in kw:
        t.contents.int_contents.extend(kw["int"])
    for r in kw.get("raw", []):
        req.raw_input_contents.append(r)
    return req


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.ModelInferRequest(model_name="m"), "non-empty list"),
        (_grpc(raw=[b"\x00" * 8], typed=[1.0, 2.0]), "both typed contents and raw"),
        (_grpc(typed=[1.0, 2.0], int=[1, 2]), "cannot be in int_contents"),
        (_grpc(typed=[1.0]), "needs 2 elements"),
        (_grpc(raw=[b"\x00" * 8, b""]), "2 raw_input_contents entries for 1 inputs"),
        (_grpc(datatype="FP16", shape=[1]), "raw_input_contents"),
        (_grpc(shape=[0, 1 << 40]), "too large"),
        (_grpc(shape=[-3]), "negative"),
    ],
)
def test_grpc_request_errors(request_, message):
    with pytest.raises(BadRequest, match=message):
        parse_request(request_)


def test_grpc_classification_parameter_is_read():
    req = _grpc(typed=[1.0, 2.0])
    out = req.outputs.add(name="shapes")
    out.parameters["classification"].int64_param = 3
    parsed = parse_request(req)
    assert parsed.outputs is not None and parsed.outputs[0].classification == 3


def test_grpc_response_round_trip():
    t = Tensor("y", "UINT8", np.arange(6, dtype=np.uint8).reshape(2, 3))
    resp = render_response(InferResponse("m", "1", [t], "abc"))
    assert resp.id == "abc" and list(resp.outputs[0].shape) == [2, 3]
    assert (
        from_bytes("y", "UINT8", [2, 3], resp.raw_output_contents[0]).tolist() == t.array.tolist()
    )


def test_request_binary_default():
    req = InferRequest("m", None, [], None)
    assert req.binary("anything")
