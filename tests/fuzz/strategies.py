"""Hypothesis strategies for realistic-but-hostile gateway requests (HTTP ``HttpCase``s).

/v1 predict (multipart, JSON/base64, raw bodies; odd query parameters), KServe v2 over HTTP
(JSON tensors, the binary tensor extension, gzip/deflate bodies) and the v2 metadata routes.
Most fields mix good values with bad ones so that many requests get deep into the server
before something is wrong with them. gRPC strategies live in ``grpc_strategies``.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import struct
import zlib
from functools import cache
from typing import Any
from urllib.parse import quote

import numpy as np
from hypothesis import strategies as st

from tests.fuzz.harness import MODEL, HttpCase
from tests.fuzz.media import images, scene_png, valid_images

MISSING = object()  # a field left out

# ---- shared pieces ----------------------------------------------------------------------------

MODEL_NAMES = st.sampled_from(
    [MODEL, MODEL, MODEL, MODEL, "nope", "Scenes", "scenes ", "ščenes", "a" * 300, "sc%2Fenes", "."]
)
# version strings: good, out of range, not integers, and non-ASCII digits str.isdigit() accepts
VERSIONS = st.sampled_from(
    [
        *("1", "1", "2", "0", "00", "01", "-1", "+1", "1.0", " 1", "1 ", "abc", "9" * 25, "0x1"),
        *("١", "²", "¹", "①", "๑", "１", "߁", "𝟏", "1_0", "Ⅰ"),
    ]
)

OUTPUT_NAMES = [
    "semseg",
    "depth",
    "normals",
    "edges",
    "shapes",
    "background",
    "semseg.classes",
    "depth.depth",
    "normals.normals",
    "edges.probability",
    "shapes.probabilities",
    "background.probabilities",
    "background.label",
    "semseg.json",
    "depth.json",
    "normals.json",
    "edges.json",
    "shapes.json",
    "background.json",
    "image.box",
    "image.size",
]
DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
ITEMSIZE = {
    "BOOL": 1,
    "UINT8": 1,
    "INT8": 1,
    "UINT16": 2,
    "INT16": 2,
    "FP16": 2,
    "UINT32": 4,
    "INT32": 4,
    "FP32": 4,
    "UINT64": 8,
    "INT64": 8,
    "FP64": 8,
}
NUMPY = {
    "BOOL": "?",
    "UINT8": "u1",
    "INT8": "i1",
    "UINT16": "<u2",
    "INT16": "<i2",
    "FP16": "<f2",
    "UINT32": "<u4",
    "INT32": "<i4",
    "FP32": "<f4",
    "UINT64": "<u8",
    "INT64": "<i8",
    "FP64": "<f8",
}

IMAGE_SHAPE = [3, 128, 128]
IMAGE_ELEMENTS = math.prod(IMAGE_SHAPE)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)

# dimensions: small, the model's, huge, past int64, negative
HUGE_DIMS = [2**31 - 1, 2**31, 2**32, 2**53, 2**62, 2**63 - 1, 2**63, 2**64, 10**30]
dims = st.one_of(st.integers(-3, 10), st.sampled_from([3, 128, *HUGE_DIMS, -1, -(2**63), -(2**64)]))
bad_shapes = st.one_of(
    st.just(MISSING),
    st.none(),
    st.text(max_size=6),
    st.integers(-5, 2**40),
    st.floats(),
    st.booleans(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(dims, max_size=6),
    st.lists(
        st.one_of(
            dims,
            st.floats(),
            st.text(max_size=3),
            st.booleans(),
            st.none(),
            st.lists(dims, max_size=2),
        ),
        min_size=1,
        max_size=4,
    ),
    # zero elements, huge dimensions
    st.lists(st.sampled_from(HUGE_DIMS), min_size=1, max_size=4).map(lambda d: [0, *d]),
    st.lists(st.sampled_from(HUGE_DIMS), min_size=1, max_size=3).map(lambda d: [*d, 0]),
)


def dumps(payload: Any) -> bytes:
    """JSON text of ``payload`` (big integers and NaN/Infinity as Python writes them)."""
    return json.dumps(payload, allow_nan=True, default=repr).encode()


def build(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` without the fields set to MISSING (recursively into lists and dicts)."""
    if isinstance(payload, dict):
        return {k: build(v) for k, v in payload.items() if v is not MISSING}
    if isinstance(payload, list):
        return [build(v) for v in payload if v is not MISSING]
    return payload


def b64(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode()


def mostly(
    draw: Any, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], one_in: int = 4
) -> Any:
    """A value from ``good``, or from ``bad`` one time in ``one_in`` (shrinks towards good).

    Drawing each field this way keeps most requests valid but for one or two fields, so they
    get deep into the server before something is wrong with them.
    """
    return draw(bad) if draw(st.integers(0, one_in - 1)) == one_in - 1 else draw(good)


TASKS = ["semseg", "depth", "normals", "edges", "shapes", "background"]
GOOD_VERSIONS = st.sampled_from([None, "1"])


# ---- /v1 --------------------------------------------------------------------------------------

QUERY_VALUES = {
    "tasks": [
        "semseg",
        "semseg,depth",
        " semseg , depth ",
        "semseg,semseg",
        "colour",
        "",
        ",",
        "shapes,background,edges,normals,depth,semseg",
        "séмseg",
        "x" * 2000,
    ],
    "version": ["1", "0", "-1", "2", "١", "²", "1.0", "abc", "9" * 25, " 1", "+1", "0x1", "１"],
    "encoding": ["float16", "png", "json", "", "PNG", "bmp", "jpeg", "float32", "ʲson"],
    "resolution": ["model", "original", "", "ORIGINAL", "huge", "native"],
    "max_side": [
        "1",
        "8",
        "512",
        "65536",
        "65537",
        "0",
        "-1",
        str(2**31),
        str(2**63),
        "abc",
        "1e3",
        "٣",
        "1.5",
    ],
    "top_k": ["1", "5", "1000", "1001", "0", "-5", str(2**63), "x", "1.5", "²", "３"],
    "junk": ["1", "", "%00"],
}

v1_params = st.lists(
    st.tuples(
        st.sampled_from(sorted(QUERY_VALUES)),
        st.integers(0, 40),
    ).map(lambda t: (t[0], QUERY_VALUES[t[0]][t[1] % len(QUERY_VALUES[t[0]])])),
    max_size=4,
)


@st.composite
def good_v1_params(draw) -> list[tuple[str, str]]:
    """Legal /v1 query parameters (resolution and max_side kept consistent)."""
    params = []
    if draw(st.booleans()):
        params.append(
            (
                "tasks",
                ",".join(
                    draw(st.lists(st.sampled_from(TASKS), min_size=1, max_size=3, unique=True))
                ),
            )
        )
    if draw(st.booleans()):
        params.append(("encoding", draw(st.sampled_from(["float16", "png", "json"]))))
    resolution = draw(st.sampled_from([None, "model", "original"]))
    if resolution:
        params.append(("resolution", resolution))
    if resolution != "model" and draw(st.booleans()):
        params.append(("max_side", str(draw(st.sampled_from([1, 8, 64, 256, 1024])))))
    if draw(st.booleans()):
        params.append(("top_k", str(draw(st.integers(1, 10)))))
    if draw(st.booleans()):
        params.append(("version", "1"))
    return params


def v1_path(name: str) -> str:
    """The predict route of model ``name`` (quoted as a client would)."""
    return f"/v1/models/{quote(name, safe='%')}/predict"


def _multipart(
    parts: list[tuple[str, str | None, str | None, bytes]], boundary: str, close: bool
) -> bytes:
    out = b""
    for name, filename, ctype, content in parts:
        disp = f'form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        head = f"--{boundary}\r\nContent-Disposition: {disp}\r\n"
        if ctype:
            head += f"Content-Type: {ctype}\r\n"
        out += head.encode() + b"\r\n" + content + b"\r\n"
    if close:
        out += f"--{boundary}--\r\n".encode()
    return out


@st.composite
def v1_multipart(draw) -> HttpCase:
    """A multipart predict: parts named file/files/other, odd filenames, broken framing."""
    bad_part = st.tuples(
        st.sampled_from(["file", "file", "files", "files", "image", "", "FILE", "fïle"]),
        st.sampled_from(["a.png", "a.png", None, "", "../../x.jpg", "ü.png", 'q"uote.png']),
        st.sampled_from(
            ["image/png", "image/jpeg", None, "text/plain", "application/octet-stream"]
        ),
        st.one_of(images(), st.just(scene_png())),
    )
    good_part = st.tuples(
        st.sampled_from(["file", "files"]),
        st.just("a.png"),
        st.just("image/png"),
        valid_images(strict=True),
    )
    if draw(st.booleans()):
        parts = [
            mostly(draw, good_part, bad_part, one_in=6) for _ in range(draw(st.integers(1, 4)))
        ]
    else:
        parts = draw(st.lists(bad_part, max_size=5))
    if draw(st.integers(0, 9)) == 0:  # over max_fields
        parts += [("field", None, None, b"v")] * draw(st.sampled_from([16, 17, 40]))
    boundary = draw(st.sampled_from(["zzBOUNDARYzz", "x", "a" * 70, "b" * 100, "----=_Part_0"]))
    body = _multipart(parts, boundary, close=draw(st.booleans() | st.just(True)))
    framing = mostly(
        draw,
        st.just("ok"),
        st.sampled_from(["other-boundary", "no-boundary", "truncated", "junk-after"]),
    )
    ctype = f"multipart/form-data; boundary={boundary}"
    if framing == "other-boundary":
        ctype = "multipart/form-data; boundary=somethingelse"
    elif framing == "no-boundary":
        ctype = "multipart/form-data"
    elif framing == "truncated":
        body = body[: draw(st.integers(0, max(0, len(body) - 1)))]
    elif framing == "junk-after":
        body += draw(st.binary(min_size=1, max_size=50))
    return HttpCase(
        "POST",
        v1_path(mostly(draw, st.just(MODEL), MODEL_NAMES)),
        params=mostly(draw, good_v1_params(), v1_params),
        headers={"content-type": ctype},
        content=body,
        note=f"multipart {len(parts)} parts, {framing}",
    )


@st.composite
def base64_item(draw) -> Any:
    """One entry of a JSON ``images`` list: base64 in its forms, data URLs, and non-strings."""
    data = mostly(draw, valid_images(strict=True), images(), one_in=3)
    form = mostly(
        draw,
        st.sampled_from(["std", "data-url"]),
        st.sampled_from(
            [
                "urlsafe",
                "unpadded",
                "wrapped",
                "data-url-bad",
                "spaces",
                "not-a-string",
                "junk-text",
            ]
        ),
    )
    text = b64(data)
    if form == "urlsafe":
        return base64.urlsafe_b64encode(data).decode()
    if form == "unpadded":
        return text.rstrip("=")
    if form == "wrapped":
        return "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    if form == "data-url":
        return "data:image/png;base64," + text
    if form == "data-url-bad":
        return draw(
            st.sampled_from(
                ["data:", "data:,", "data:image/png;base64,@@", "data:image/png," + text]
            )
        )
    if form == "spaces":
        return f" {text} "
    if form == "not-a-string":
        return draw(json_values)
    if form == "junk-text":
        return draw(st.text(max_size=40))
    return text


@st.composite
def v1_json(draw) -> HttpCase:
    """A JSON predict: {"images": [...]} with good and bad entries, or something else."""
    shape = mostly(
        draw,
        st.just("images"),
        st.sampled_from(["images-not-list", "other-object", "not-object", "text"]),
    )
    if shape == "images":
        payload: Any = {
            "images": draw(
                st.lists(base64_item(), min_size=mostly(draw, st.just(1), st.just(0)), max_size=4)
            )
        }
        if draw(st.booleans()):
            payload.update(
                draw(
                    st.dictionaries(
                        st.sampled_from(["tasks", "version", "extra"]), json_values, max_size=2
                    )
                )
            )
        body = dumps(payload)
    elif shape == "images-not-list":
        body = dumps({"images": draw(json_values)})
    elif shape == "other-object":
        body = dumps(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)))
    elif shape == "not-object":
        body = dumps(draw(json_values))
    else:
        body = draw(
            st.one_of(
                st.binary(max_size=200),
                st.sampled_from(
                    [b"", b"{", b'{"images": [', b'{"images": NaN}', b"[" * 5000 + b"]" * 5000]
                ),
                st.text(max_size=100).map(str.encode),
            )
        )
    ctype = draw(
        st.sampled_from(
            [
                "application/json",
                "application/json",
                "application/json; charset=utf-8",
                "APPLICATION/JSON",
            ]
        )
    )
    return HttpCase(
        "POST",
        v1_path(mostly(draw, st.just(MODEL), MODEL_NAMES)),
        params=mostly(draw, good_v1_params(), v1_params),
        headers={"content-type": ctype},
        content=body,
        note=f"json {shape}",
    )


@st.composite
def v1_raw(draw) -> HttpCase:
    """A raw-body predict under assorted content types."""
    ctype = mostly(
        draw,
        st.sampled_from(["image/png", "image/jpeg", "application/octet-stream"]),
        st.sampled_from(
            [
                "image/png",
                "image/png",
                "image/jpeg",
                "image/webp",
                "image/x-anything",
                "image/",
                "application/octet-stream",
                "IMAGE/PNG; charset=latin-1",
                "text/plain",
                None,
                "",
                "multipart/form-data",
                "application/json",
                "image/png, image/jpeg",
            ]
        ),
    )
    body = mostly(draw, valid_images(strict=True), st.one_of(images(), st.just(b"")), one_in=2)
    headers = {"content-type": ctype} if ctype is not None else {}
    path = v1_path(mostly(draw, st.just(MODEL), MODEL_NAMES))
    params = mostly(draw, good_v1_params(), v1_params)
    return HttpCase("POST", path, params=params, headers=headers, content=body, note="raw")


@st.composite
def v1_get(draw) -> HttpCase:
    """GET /v1/models and /v1/models/{name}, with odd versions; and wrong methods."""
    route = draw(st.sampled_from(["list", "model", "model", "predict-get"]))
    params = None
    if draw(st.booleans()):
        params = [("version", draw(st.sampled_from(QUERY_VALUES["version"])))]
    name = quote(draw(MODEL_NAMES), safe="%")
    path = {
        "list": "/v1/models",
        "model": f"/v1/models/{name}",
        "predict-get": f"/v1/models/{name}/predict",
    }[route]
    method = draw(
        st.sampled_from(["GET", "GET", "GET", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"])
    )
    return HttpCase(method, path, params=params)


# ---- v2 over HTTP: URLs -----------------------------------------------------------------------


@st.composite
def v2_model_path(draw, suffix: str) -> str:
    """/v2/models/{name}[/versions/{v}]{suffix}, with odd names and versions."""
    name = quote(draw(MODEL_NAMES), safe="%")
    version = draw(st.none() | VERSIONS)
    if draw(st.integers(0, 2)) == 0:  # the model under test, an odd version
        name, version = MODEL, draw(VERSIONS)
    base = f"/v2/models/{name}"
    if version is not None:
        base += f"/versions/{quote(version)}"
    return base + suffix


CONTROL_BODIES = st.one_of(
    st.just(b""),
    json_values.map(dumps),
    st.fixed_dictionaries(
        {},
        optional={
            "parameters": st.one_of(
                st.dictionaries(
                    st.sampled_from(["config", "file:1/model.onnx", "x"]), json_values, max_size=2
                ),
                json_values,
            )
        },
    ).map(dumps),
    st.binary(max_size=50),
)


@st.composite
def v2_get(draw) -> HttpCase:
    """The v2 metadata, readiness, config, statistics, server and repository routes."""
    route = draw(
        st.sampled_from(
            ["metadata", "ready", "config", "stats", "server", "index", "health", "load", "unload"]
        )
    )
    if route == "server":
        return HttpCase("GET", "/v2")
    if route == "health":
        return HttpCase(
            draw(st.sampled_from(["GET", "POST"])),
            draw(st.sampled_from(["/v2/health/live", "/v2/health/ready"])),
        )
    if route == "index":
        body = draw(
            st.one_of(
                st.just(b""),
                json_values.map(dumps),
                st.fixed_dictionaries({"ready": json_scalars}).map(dumps),
                st.binary(max_size=50),
            )
        )
        return HttpCase(
            "POST",
            "/v2/repository/index",
            headers={"content-type": "application/json"},
            content=body,
        )
    if route in ("load", "unload"):
        # never unload the model under test: the rest of the suite needs it
        name = draw(MODEL_NAMES.filter(lambda n: route == "load" or n != MODEL))
        path = f"/v2/repository/models/{quote(name, safe='%')}/{route}"
        return HttpCase(
            "POST", path, headers={"content-type": "application/json"}, content=draw(CONTROL_BODIES)
        )
    if route == "stats" and draw(st.booleans()):
        return HttpCase("GET", "/v2/models/stats")
    suffix = {"metadata": "", "ready": "/ready", "config": "/config", "stats": "/stats"}[route]
    method = draw(st.sampled_from(["GET", "GET", "GET", "POST", "DELETE"]))
    return HttpCase(method, draw(v2_model_path(suffix)))


# ---- v2 over HTTP: tensors --------------------------------------------------------------------

INPUT_NAMES = st.sampled_from(
    ["image", "image", "image_bytes", "image_bytes", "", "images", "ímage", MISSING, 7, None]
)
DATATYPE_VALUES = st.one_of(
    st.sampled_from(DATATYPES),
    st.sampled_from(["FP32", "FP32", "BYTES", "fp32", "FLOAT", "TYPE_FP32", "", "BF16", MISSING]),
    json_scalars,
)


def _scalar_for(datatype: Any) -> st.SearchStrategy[Any]:
    """JSON values of the right kind for ``datatype`` (with some out of its range)."""
    if datatype == "BOOL":
        return st.booleans()
    if datatype == "BYTES":
        return st.one_of(st.text(max_size=20), st.just(b64(scene_png())))
    if isinstance(datatype, str) and datatype.startswith(("INT", "UINT")):
        bits = int(datatype.removeprefix("U").removeprefix("INT"))
        return st.integers(-(2 ** (bits + 1)), 2 ** (bits + 1))
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70))


INPUT_PARAMETERS = st.one_of(
    st.just(MISSING),
    st.fixed_dictionaries(
        {"content_type": st.sampled_from(["base64", "base64", "str", "bytes", ""])}
    ),
    st.fixed_dictionaries({"content_type": json_scalars}),
    st.fixed_dictionaries({"binary_data_size": json_scalars}),
    st.fixed_dictionaries(
        {"shared_memory_region": st.text(max_size=6)},
        optional={"shared_memory_byte_size": json_scalars, "shared_memory_offset": json_scalars},
    ),
    json_values,
)


@cache
def _image_data(n: int, fill: float, nested: bool) -> list[Any]:
    flat = [fill] * (n * IMAGE_ELEMENTS)
    if not nested:
        return flat
    return np.array(flat, dtype=object).reshape(n, *IMAGE_SHAPE).tolist()


@st.composite
def v2_json_input(draw) -> dict[str, Any]:
    """One entry of ``inputs`` with JSON ``data``."""
    # small kinds first: Hypothesis shrinks towards the first choice
    kind = draw(st.sampled_from(["random", "image_bytes", "image_bytes", "image", "image"]))
    item: dict[str, Any] = {}
    if kind == "image":
        n = draw(st.sampled_from([1, 1, 2, 0, 9]))
        item["name"] = draw(st.just("image") | INPUT_NAMES)
        item["datatype"] = draw(
            st.sampled_from(["FP32", "FP32", "FP16", "FP64", "INT8", "BYTES"]) | DATATYPE_VALUES
        )
        item["shape"] = draw(
            st.sampled_from(
                [[n, *IMAGE_SHAPE], [n, *IMAGE_SHAPE], [n * IMAGE_ELEMENTS], [n, 128, 128, 3]]
            )
            | bad_shapes
        )
        fill = draw(st.sampled_from([0.0, 0.5, -1.0, 1e38, 1e39, 1e309, -1e309]))
        count = draw(st.sampled_from(["exact", "exact", "nested", "one-less", "one-more"]))
        data = _image_data(n, fill, count == "nested")
        if count == "one-less":
            data = data[:-1]
        elif count == "one-more":
            data = [*data, 0.0]
        item["data"] = data
    elif kind == "image_bytes":
        elements = draw(
            st.lists(st.one_of(valid_images(max_side=96), images()), min_size=0, max_size=3)
        )
        as_text = draw(st.sampled_from(["base64", "base64", "latin-1", "utf-8-lossy"]))
        if as_text == "base64":
            data = [b64(e) for e in elements]
        elif as_text == "latin-1":
            data = [e.decode("latin-1") for e in elements]
        else:
            data = [e.decode("utf-8", "replace") for e in elements]
        item["name"] = draw(st.just("image_bytes") | INPUT_NAMES)
        item["datatype"] = draw(st.just("BYTES") | DATATYPE_VALUES)
        item["shape"] = draw(
            st.sampled_from([[len(data)], [len(data), 1], [1, len(data)], [len(data) + 1]])
            | bad_shapes
        )
        item["data"] = draw(st.just(data) | st.just([data]) | json_values)
    else:
        datatype = draw(DATATYPE_VALUES)
        shape = draw(st.lists(st.integers(0, 4), max_size=3) | bad_shapes)
        item["name"] = draw(INPUT_NAMES)
        item["datatype"] = datatype
        item["shape"] = shape
        if isinstance(shape, list) and all(isinstance(d, int) and 0 <= d <= 64 for d in shape):
            count = math.prod(shape)
            item["data"] = draw(
                st.lists(_scalar_for(datatype), min_size=count, max_size=count) | json_values
            )
        else:
            item["data"] = draw(json_values | st.just(MISSING))
    if kind == "image_bytes" or draw(st.integers(0, 5)) == 0:
        item["parameters"] = draw(INPUT_PARAMETERS)
    return item


@st.composite
def v2_outputs(draw) -> Any:
    """The ``outputs`` field: known and unknown names, binary flags of every type."""
    choice = draw(st.sampled_from(["missing", "missing", "list", "list", "list", "junk"]))
    if choice == "missing":
        return MISSING
    if choice == "junk":
        return draw(json_values)
    names = st.one_of(
        st.sampled_from(OUTPUT_NAMES),
        st.sampled_from(["nope", "", "semseg.nope", "image.", 3, None]),
    )
    entry = st.fixed_dictionaries(
        {"name": names},
        optional={
            "parameters": st.one_of(
                st.fixed_dictionaries({"binary_data": st.one_of(st.booleans(), json_scalars)}),
                st.fixed_dictionaries({"classification": st.integers(0, 3)}),
                st.fixed_dictionaries({"shared_memory_region": st.text(max_size=6)}),
                json_values,
            )
        },
    )
    return draw(st.lists(st.one_of(entry, json_values), max_size=4))


PARAMETER_VALUES = {
    "binary_data_output": st.one_of(st.booleans(), json_scalars),
    "resolution": st.one_of(st.sampled_from(["model", "original", "huge", ""]), json_scalars),
    "max_side": st.one_of(
        st.sampled_from([1, 8, 64, 4096, 65536, 65537, 0, -1, 2**63, 2**64]), json_scalars
    ),
    "top_k": st.one_of(st.sampled_from([1, 5, 1000, 1001, 0, -1, 2**63]), json_scalars),
    "encoding": st.one_of(st.sampled_from(["float16", "png", "json", "bmp"]), json_scalars),
    "sequence_id": json_scalars,
    "shared_memory_region": st.text(max_size=6),
    "priority": json_scalars,
    "timeout": json_scalars,
}


@st.composite
def v2_parameters(draw) -> Any:
    """The request's ``parameters``: known keys with right and wrong types, or junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    keys = draw(st.lists(st.sampled_from(sorted(PARAMETER_VALUES)), max_size=3, unique=True))
    return {k: draw(PARAMETER_VALUES[k]) for k in keys} or MISSING


@st.composite
def hostile_v2_json(draw) -> HttpCase:
    """A v2 infer with JSON tensors, anything in any field."""
    shape = draw(
        st.sampled_from(
            ["request", "request", "request", "request", "inputs-junk", "not-object", "text"]
        )
    )
    if shape in ("request", "inputs-junk"):
        payload = {
            "id": draw(st.just(MISSING) | st.text(max_size=8) | json_scalars),
            "inputs": draw(st.lists(v2_json_input(), min_size=1, max_size=2))
            if shape == "request"
            else draw(json_values | st.just(MISSING)),
            "outputs": draw(v2_outputs()),
            "parameters": draw(v2_parameters()),
        }
        body = dumps(build(payload))
    elif shape == "not-object":
        body = dumps(draw(json_values))
    else:
        body = draw(
            st.one_of(
                st.binary(max_size=100), st.sampled_from([b"", b"{", b"[" * 3000 + b"]" * 3000])
            )
        )
    headers = {
        "content-type": draw(
            st.sampled_from(
                ["application/json", "application/json", "text/plain", "application/octet-stream"]
            )
        )
    }
    return HttpCase(
        "POST",
        draw(v2_model_path("/infer")),
        headers=headers,
        content=body,
        note=f"v2 json {shape}",
    )


# ---- v2 binary extension ----------------------------------------------------------------------


def bytes_elements(elements: list[bytes], framing: str, junk: bytes) -> bytes:
    """BYTES elements as 4-byte little-endian length + bytes, framed right or wrong."""
    out = b""
    for i, e in enumerate(elements):
        n = len(e)
        if framing == "length-too-big" and i == len(elements) - 1:
            n += 1 + len(junk)
        elif framing == "length-huge" and i == 0:
            n = 2**32 - 1
        elif framing == "length-too-small" and i == 0:
            n = max(0, n - 1)
        out += struct.pack("<I", n) + e
    if framing == "truncated":
        out = out[: max(0, len(out) - 1 - len(junk) % 5)]
    elif framing == "trailing":
        out += junk or b"\x00"
    elif framing == "short-prefix":
        out += b"\x01\x00"
    return out


def _fill_bytes(datatype: str, count: int, fill: str) -> bytes:
    code = NUMPY.get(datatype, "<f4")
    if fill == "nan" and code.endswith(("f2", "f4", "f8")):
        return np.full(count, np.nan, dtype=code).tobytes()
    if fill == "inf" and code.endswith(("f2", "f4", "f8")):
        return np.full(count, np.inf, dtype=code).tobytes()
    if fill == "ones":
        return np.ones(count, dtype=code).tobytes()
    if fill == "0xff":
        return b"\xff" * (count * np.dtype(code).itemsize)
    return np.zeros(count, dtype=code).tobytes()


@st.composite
def v2_binary_input(draw) -> tuple[dict[str, Any], bytes]:
    """One binary input: its JSON entry and its bytes."""
    kind = draw(st.sampled_from(["random", "image_bytes", "image_bytes", "image", "image"]))
    if kind == "image":
        n = draw(st.sampled_from([1, 1, 2, 0, 9]))
        datatype = draw(st.sampled_from(["FP32", "FP32", "FP16", "FP64", "UINT8", "BOOL", "BYTES"]))
        shape = draw(
            st.sampled_from([[n, *IMAGE_SHAPE], [n, *IMAGE_SHAPE], [n, 128, 128, 3]]) | bad_shapes
        )
        data = _fill_bytes(
            datatype,
            n * IMAGE_ELEMENTS,
            draw(st.sampled_from(["zeros", "ones", "nan", "inf", "0xff"])),
        )
        name = draw(st.just("image") | INPUT_NAMES)
    elif kind == "image_bytes":
        elements = draw(
            st.lists(st.one_of(valid_images(max_side=96), images()), min_size=0, max_size=3)
        )
        framing = draw(
            st.sampled_from(
                [
                    "ok",
                    "ok",
                    "ok",
                    "length-too-big",
                    "length-huge",
                    "length-too-small",
                    "truncated",
                    "trailing",
                    "short-prefix",
                ]
            )
        )
        data = bytes_elements(elements, framing, draw(st.binary(max_size=8)))
        datatype = draw(st.just("BYTES") | DATATYPE_VALUES)
        shape = draw(
            st.sampled_from(
                [
                    [len(elements)],
                    [len(elements), 1],
                    [len(elements) + 1],
                    [max(0, len(elements) - 1)],
                ]
            )
            | bad_shapes
        )
        name = draw(st.just("image_bytes") | INPUT_NAMES)
    else:
        datatype = draw(DATATYPE_VALUES)
        shape = draw(st.lists(st.integers(0, 4), max_size=3) | bad_shapes)
        if (
            isinstance(shape, list)
            and all(isinstance(d, int) and 0 <= d <= 64 for d in shape)
            and datatype in ITEMSIZE
        ):
            data = draw(
                st.binary(
                    min_size=math.prod(shape) * ITEMSIZE[datatype],
                    max_size=math.prod(shape) * ITEMSIZE[datatype],
                )
            )
        else:
            data = draw(st.binary(max_size=64))
        name = draw(INPUT_NAMES)
    size_policy = draw(
        st.sampled_from(
            [
                "exact",
                "exact",
                "exact",
                "exact",
                "plus",
                "minus",
                "zero",
                "wrong-type",
                "missing",
                "with-data",
            ]
        )
    )
    size: Any = len(data)
    if size_policy == "plus":
        size += draw(st.integers(1, 10))
    elif size_policy == "minus":
        size -= draw(st.integers(1, 10))
    elif size_policy == "zero":
        size = 0
    elif size_policy == "wrong-type":
        size = draw(
            st.sampled_from([str(len(data)), float(len(data)), True, None, [len(data)], -1, 2**64])
        )
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    if size_policy != "missing":
        entry["parameters"] = {"binary_data_size": size}
    if size_policy == "with-data":
        entry["data"] = [0]
    return entry, data


HEADER_LENGTHS = [
    "exact",
    "exact",
    "exact",
    "missing",
    "zero",
    "-1",
    "minus-1",
    "plus-1",
    "body",
    "body+1",
    "abc",
    "leading-zero",
    "float",
    "fullwidth",
    "underscore",
    "plus-sign",
    "huge",
    "empty",
]


@st.composite
def hostile_v2_binary(draw) -> HttpCase:
    """A v2 infer with the binary tensor extension, its sizes right or wrong."""
    pairs = draw(st.lists(v2_binary_input(), min_size=1, max_size=2))
    payload = {
        "id": draw(st.just(MISSING) | st.text(max_size=8)),
        "inputs": [e for e, _ in pairs],
        "outputs": draw(v2_outputs()),
        "parameters": draw(v2_parameters()),
    }
    header = dumps(build(payload))
    body = header + b"".join(d for _, d in pairs)
    if draw(st.integers(0, 7)) == 0:
        body += draw(st.binary(min_size=1, max_size=16))
    policy = draw(st.sampled_from(HEADER_LENGTHS))
    n = len(header)
    value: str | bytes | None = {
        "exact": str(n),
        "missing": None,
        "zero": "0",
        "-1": "-1",
        "minus-1": str(n - 1),
        "plus-1": str(n + 1),
        "body": str(len(body)),
        "body+1": str(len(body) + 1),
        "abc": "abc",
        "leading-zero": f"00{n}",
        "float": f"{n}.0",
        "fullwidth": "".join(chr(0xFF10 + int(c)) for c in str(n)).encode("utf-8"),
        "underscore": "_".join(str(n)) if n >= 10 else str(n),
        "plus-sign": f"+{n}",
        "huge": str(2**64),
        "empty": "",
    }[policy]
    headers: dict[str, str | bytes] = {"content-type": "application/octet-stream"}
    if value is not None:
        headers["inference-header-content-length"] = value
    return HttpCase(
        "POST",
        draw(v2_model_path("/infer")),
        headers=headers,
        content=body,
        note=f"binary, header length {policy}",
    )


# ---- Content-Encoding -------------------------------------------------------------------------


@cache
def _zero_image_request() -> bytes:
    return dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": [1, *IMAGE_SHAPE],
                    "data": [0.0] * IMAGE_ELEMENTS,
                }
            ],
            "outputs": [{"name": "shapes"}],
        }
    )


@cache
def _bomb(kind: str) -> bytes:
    """~40 MB of spaces (over the 32 MiB body limit once inflated), compressed."""
    raw = b" " * (40 * 1024 * 1024)
    return gzip.compress(raw, 9) if kind == "gzip" else zlib.compress(raw, 9)


def _deflate(data: bytes, form: str) -> bytes:
    if form == "raw":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    return zlib.compress(data)


@st.composite
def v2_encoded(draw) -> HttpCase:
    """A compressed body (gzip / deflate), well-formed or not, under assorted Content-Encodings."""
    plain = mostly(
        draw,
        st.one_of(
            st.just(_zero_image_request()),
            careful_v2_json().map(lambda c: c.content or b""),
            st.just(
                dumps(
                    {
                        "inputs": [
                            {
                                "name": "image_bytes",
                                "datatype": "BYTES",
                                "shape": [1],
                                "parameters": {"content_type": "base64"},
                                "data": [b64(scene_png())],
                            }
                        ]
                    }
                )
            ),
        ),
        st.one_of(hostile_v2_json().map(lambda c: c.content or b""), st.binary(max_size=100)),
    )
    form = mostly(
        draw,
        st.sampled_from(["gzip", "deflate", "multi-member", "split-members"]),
        st.sampled_from(["raw-deflate", "truncated", "trailing-junk", "plain", "empty", "bomb"]),
        one_in=2,
    )
    natural = "deflate" if "deflate" in form else "gzip"
    encoding = mostly(
        draw,
        st.sampled_from([natural, natural.upper()]),
        st.sampled_from(
            ["gzip", "deflate", "x-gzip", "br", "zstd", "gzip, deflate", "identity", "", "compress"]
        ),
    )
    if form == "gzip" or (form == "plain" and encoding == "gzip"):
        body = gzip.compress(plain)
    elif form == "deflate":
        body = _deflate(plain, "zlib")
    elif form == "raw-deflate":
        body = _deflate(plain, "raw")
    elif form == "multi-member":
        body = gzip.compress(plain) + gzip.compress(plain)
    elif form == "split-members":
        half = len(plain) // 2
        body = gzip.compress(plain[:half]) + gzip.compress(plain[half:])
    elif form == "truncated":
        whole = gzip.compress(plain) if draw(st.booleans()) else zlib.compress(plain)
        body = whole[: draw(st.integers(0, max(0, len(whole) - 1)))]
    elif form == "trailing-junk":
        body = gzip.compress(plain) + draw(st.binary(min_size=1, max_size=20))
    elif form == "empty":
        body = b""
    elif form == "bomb":
        body = _bomb("gzip" if "gzip" in encoding.lower() else "deflate")
    else:
        body = plain
    path = mostly(
        draw, good_v2_path("/infer"), st.one_of(v2_model_path("/infer"), st.just(v1_path(MODEL)))
    )
    ctype = "image/png" if path.startswith("/v1") and draw(st.booleans()) else "application/json"
    return HttpCase(
        "POST",
        path,
        headers={"content-type": ctype, "content-encoding": encoding},
        content=body,
        note=f"encoded {form}",
    )


# ---- v2: mostly-valid requests (one or two fields wrong) ----------------------------------------


@st.composite
def good_v2_path(draw, suffix: str) -> str:
    """The model under test, newest or version 1."""
    version = draw(GOOD_VERSIONS)
    return f"/v2/models/{MODEL}" + (f"/versions/{version}" if version else "") + suffix


@st.composite
def good_outputs(draw) -> Any:
    """No outputs (the raw ones), or known outputs once each with legal binary flags."""
    if draw(st.booleans()):
        return MISSING
    names = draw(st.lists(st.sampled_from(OUTPUT_NAMES), min_size=1, max_size=4, unique=True))
    out = []
    for name in names:
        entry: dict[str, Any] = {"name": name}
        flag = draw(st.none() | st.booleans())
        if flag is not None:
            entry["parameters"] = {"binary_data": flag}
        out.append(entry)
    return out


@st.composite
def good_parameters(draw) -> Any:
    """Legal request parameters (resolution and max_side kept consistent)."""
    params: dict[str, Any] = {}
    resolution = draw(st.sampled_from([None, "model", "original"]))
    if resolution:
        params["resolution"] = resolution
    if resolution != "model" and draw(st.booleans()):
        params["max_side"] = draw(st.sampled_from([1, 8, 64, 256, 1024]))
    if draw(st.booleans()):
        params["top_k"] = draw(st.integers(1, 10))
    if draw(st.booleans()):
        params["encoding"] = draw(st.sampled_from(["float16", "png", "json"]))
    if draw(st.booleans()):
        params["binary_data_output"] = draw(st.booleans())
    return params or MISSING


@st.composite
def good_json_input(draw) -> dict[str, Any]:
    """A legal JSON input: a small FP32/FP16/FP64 image batch, or base64 encoded images."""
    if draw(st.booleans()):
        elements = draw(st.lists(valid_images(max_side=96, strict=True), min_size=1, max_size=2))
        return {
            "name": "image_bytes",
            "datatype": "BYTES",
            "shape": draw(st.sampled_from([[len(elements)], [len(elements), 1]])),
            "parameters": {"content_type": "base64"},
            "data": [b64(e) for e in elements],
        }
    n = draw(st.sampled_from([1, 2]))
    return {
        "name": "image",
        "datatype": draw(st.sampled_from(["FP32", "FP16", "FP64"])),
        "shape": [n, *IMAGE_SHAPE],
        "data": _image_data(n, draw(st.sampled_from([0.0, 0.5, -1.0])), draw(st.booleans())),
    }


@st.composite
def careful_v2_json(draw) -> HttpCase:
    """A legal v2 JSON infer with, now and then, one field of it hostile."""
    payload = {
        "id": mostly(draw, st.just(MISSING) | st.text(max_size=8), json_scalars, one_in=8),
        "inputs": [mostly(draw, good_json_input(), v2_json_input())],
        "outputs": mostly(draw, good_outputs(), v2_outputs()),
        "parameters": mostly(draw, good_parameters(), v2_parameters()),
    }
    path = mostly(draw, good_v2_path("/infer"), v2_model_path("/infer"), one_in=6)
    return HttpCase(
        "POST",
        path,
        headers={"content-type": "application/json"},
        content=dumps(build(payload)),
        note="v2 json, careful",
    )


@st.composite
def v2_json(draw) -> HttpCase:
    """A v2 infer with JSON tensors: mostly-valid half the time, hostile the other half."""
    return draw(hostile_v2_json() if draw(st.booleans()) else careful_v2_json())


@st.composite
def good_binary_input(draw) -> tuple[dict[str, Any], bytes]:
    """A legal binary input: a small image batch, or length-prefixed encoded images."""
    if draw(st.booleans()):
        elements = draw(st.lists(valid_images(max_side=96, strict=True), min_size=1, max_size=2))
        data = bytes_elements(elements, "ok", b"")
        shape = draw(st.sampled_from([[len(elements)], [len(elements), 1]]))
        entry = {"name": "image_bytes", "datatype": "BYTES", "shape": shape}
    else:
        n = draw(st.sampled_from([1, 2]))
        datatype = draw(st.sampled_from(["FP32", "FP16", "FP64"]))
        data = _fill_bytes(datatype, n * IMAGE_ELEMENTS, draw(st.sampled_from(["zeros", "ones"])))
        entry = {"name": "image", "datatype": datatype, "shape": [n, *IMAGE_SHAPE]}
    entry["parameters"] = {"binary_data_size": len(data)}
    return entry, data


@st.composite
def careful_v2_binary(draw) -> HttpCase:
    """A legal binary-extension infer with, now and then, one part of it wrong."""
    entry, data = mostly(draw, good_binary_input(), v2_binary_input())
    payload = {
        "inputs": [entry],
        "outputs": mostly(draw, good_outputs(), v2_outputs()),
        "parameters": mostly(draw, good_parameters(), v2_parameters()),
    }
    header = dumps(build(payload))
    body = header + data
    length: str | bytes = str(len(header))
    if draw(st.integers(0, 5)) == 5:
        length = draw(
            st.sampled_from(
                ["0", str(len(header) - 1), str(len(header) + 1), str(len(body) + 1), "x"]
            )
        )
    path = mostly(draw, good_v2_path("/infer"), v2_model_path("/infer"), one_in=6)
    headers: dict[str, str | bytes] = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": length,
    }
    return HttpCase("POST", path, headers=headers, content=body, note="binary, careful")


@st.composite
def v2_binary(draw) -> HttpCase:
    """A binary-extension infer: mostly-valid half the time, hostile the other half."""
    return draw(hostile_v2_binary() if draw(st.booleans()) else careful_v2_binary())
