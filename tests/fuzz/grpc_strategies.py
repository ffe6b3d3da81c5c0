"""Hypothesis strategies for KServe v2 gRPC requests with random protobuf field values.

ModelInfer: raw_input_contents or typed contents (or both, or counts that disagree), every
datatype, int64 shapes from negative through huge to zero-element-with-huge-dims, request and
output parameters of every InferParameter kind; ModelMetadata / ModelReady / ModelConfig with
odd names and versions (non-ASCII digits included).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from tests.fuzz.harness import MODEL, describe_proto
from tests.fuzz.media import images, scene_png, valid_images
from tests.fuzz.strategies import (
    DATATYPES,
    IMAGE_ELEMENTS,
    IMAGE_SHAPE,
    ITEMSIZE,
    NUMPY,
    OUTPUT_NAMES,
    TASKS,
    VERSIONS,
    bytes_elements,
    mostly,
)

INT64 = (-(2**63), 2**63 - 1)
NAMES = st.sampled_from(
    [MODEL, MODEL, MODEL, MODEL, "nope", "", "Scenes", "ščenes", "a" * 300, "scenes\x00"]
)
GRPC_VERSIONS = st.one_of(st.just(""), st.just(""), VERSIONS)
INPUT_NAMES = st.sampled_from(
    ["image", "image", "image_bytes", "image_bytes", "", "images", "ímage"]
)
DATATYPE_NAMES = st.one_of(
    st.sampled_from(DATATYPES), st.sampled_from(["FP32", "BYTES", "fp32", "", "BF16", "TYPE_FP32"])
)
grpc_dims = st.one_of(
    st.integers(-3, 10), st.sampled_from([3, 128, 2**31 - 1, 2**31, 2**32, 2**53, 2**62, *INT64])
)
grpc_shapes = st.one_of(
    st.lists(grpc_dims, max_size=6),
    st.lists(st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1]), min_size=1, max_size=4).map(
        lambda d: [0, *d]
    ),
    st.lists(st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1]), min_size=1, max_size=3).map(
        lambda d: [*d, 0]
    ),
)

CONTENTS = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(*INT64),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32, allow_nan=True, allow_infinity=True),
    "fp64_contents": st.floats(allow_nan=True, allow_infinity=True),
    "bytes_contents": st.one_of(st.binary(max_size=40), valid_images(max_side=64)),
}
TYPED = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

parameter_values = st.one_of(
    st.builds(lambda v: ("bool_param", v), st.booleans()),
    st.builds(lambda v: ("int64_param", v), st.integers(*INT64)),
    st.builds(lambda v: ("uint64_param", v), st.integers(0, 2**64 - 1)),
    st.builds(lambda v: ("double_param", v), st.floats(allow_nan=True)),
    st.builds(
        lambda v: ("string_param", v),
        st.sampled_from(["model", "original", "png", "json", "float16", "", "x"]),
    ),
)
PARAMETER_KEYS = st.sampled_from(
    ["resolution", "max_side", "top_k", "encoding", "binary_data_output", "sequence_id", "x"]
)


class Call:
    """An RPC name and its request message, with a bounded repr for Hypothesis' reports."""

    def __init__(self, method: str, message: Any) -> None:
        """``method`` of the GRPCInferenceService, ``message`` its request."""
        self.method, self.message = method, message

    def __repr__(self) -> str:
        return f"Call<{describe_proto(self.method, self.message)}>"


def _set_parameters(target, items: list[tuple[str, tuple[str, object]]]) -> None:
    for key, (kind, value) in items:
        setattr(target[key], kind, value)


@st.composite
def infer_input(draw, req: pb.ModelInferRequest) -> bytes | None:
    """Add one input to ``req``; return its raw contents (None: typed contents only)."""
    # small kinds first: Hypothesis shrinks towards the first choice
    kind = draw(st.sampled_from(["random", "image_bytes", "image_bytes", "image", "image"]))
    t = req.inputs.add()
    if kind == "image":
        n = draw(st.sampled_from([1, 1, 2, 0, 9]))
        t.name = draw(st.just("image") | INPUT_NAMES)
        t.datatype = draw(
            st.sampled_from(["FP32", "FP32", "FP16", "FP64", "UINT8", "BYTES"]) | DATATYPE_NAMES
        )
        t.shape.extend(
            draw(
                st.sampled_from([[n, *IMAGE_SHAPE], [n, *IMAGE_SHAPE], [n, 128, 128, 3]])
                | grpc_shapes
            )
        )
        fill = draw(st.sampled_from([0.0, 1.0, float("nan"), float("inf")]))
        code = NUMPY.get(t.datatype, "<f4")
        raw = np.full(
            n * IMAGE_ELEMENTS, fill if code.endswith(("f2", "f4", "f8")) else 1, dtype=code
        ).tobytes()
        if draw(st.integers(0, 4)) == 0 and t.datatype == "FP32":  # the same values, typed
            t.contents.fp32_contents.extend([fill] * (n * IMAGE_ELEMENTS))
            return None
        return raw
    if kind == "image_bytes":
        elements = draw(
            st.lists(
                st.one_of(valid_images(max_side=96), images(), st.just(scene_png())), max_size=3
            )
        )
        t.name = draw(st.just("image_bytes") | INPUT_NAMES)
        t.datatype = draw(st.just("BYTES") | DATATYPE_NAMES)
        t.shape.extend(
            draw(
                st.sampled_from([[len(elements)], [len(elements), 1], [len(elements) + 1]])
                | grpc_shapes
            )
        )
        if draw(st.booleans()):
            t.contents.bytes_contents.extend(elements)
            return None
        framing = draw(
            st.sampled_from(
                ["ok", "ok", "ok", "length-too-big", "length-huge", "truncated", "trailing"]
            )
        )
        return bytes_elements(elements, framing, draw(st.binary(max_size=8)))
    t.name = draw(INPUT_NAMES)
    t.datatype = draw(DATATYPE_NAMES)
    t.shape.extend(draw(grpc_shapes))
    small = all(0 <= d <= 64 for d in t.shape)
    count = math.prod(t.shape) if small else draw(st.integers(0, 8))
    field = draw(st.sampled_from([TYPED.get(t.datatype, "fp32_contents"), *CONTENTS]))
    if count <= 256 and draw(st.booleans()):
        getattr(t.contents, field).extend(
            draw(st.lists(CONTENTS[field], min_size=count, max_size=count))
        )
        return None
    if small and t.datatype in ITEMSIZE and count <= 4096:
        return draw(
            st.binary(min_size=count * ITEMSIZE[t.datatype], max_size=count * ITEMSIZE[t.datatype])
        )
    return draw(st.binary(max_size=64))


@st.composite
def hostile_model_infer(draw) -> pb.ModelInferRequest:
    """A ModelInferRequest: raw or typed contents (or both), good and bad everything."""
    req = pb.ModelInferRequest(
        model_name=draw(NAMES), model_version=draw(GRPC_VERSIONS), id=draw(st.text(max_size=8))
    )
    _set_parameters(
        req.parameters, draw(st.lists(st.tuples(PARAMETER_KEYS, parameter_values), max_size=3))
    )
    raws = [draw(infer_input(req)) for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2, 3])))]
    layout = draw(
        st.sampled_from(
            ["as-built", "as-built", "as-built", "all-raw", "none-raw", "one-missing", "one-extra"]
        )
    )
    if layout == "all-raw":
        raws = [r if r is not None else draw(st.binary(max_size=16)) for r in raws]
    if layout == "none-raw":
        raws = [None] * len(raws)
    raw = [r if r is not None else b"" for r in raws] if any(r is not None for r in raws) else []
    if layout == "one-missing" and raw:
        raw = raw[:-1]
    elif layout == "one-extra":
        raw = [*raw, draw(st.binary(max_size=16))]
    req.raw_input_contents.extend(raw)
    for name in draw(
        st.lists(
            st.one_of(st.sampled_from(OUTPUT_NAMES), st.sampled_from(["nope", "", "semseg.nope"])),
            max_size=4,
        )
    ):
        out = req.outputs.add(name=name)
        _set_parameters(
            out.parameters,
            draw(
                st.lists(
                    st.tuples(
                        st.sampled_from(["binary_data", "classification", "x"]), parameter_values
                    ),
                    max_size=1,
                )
            ),
        )
    return req


good_parameters = st.lists(
    st.one_of(
        st.tuples(
            st.just("resolution"),
            st.sampled_from(["model", "original"]).map(lambda v: ("string_param", v)),
        ),
        st.tuples(
            st.just("max_side"), st.sampled_from([8, 64, 256]).map(lambda v: ("int64_param", v))
        ),
        st.tuples(st.just("top_k"), st.integers(1, 10).map(lambda v: ("int64_param", v))),
        st.tuples(
            st.just("encoding"),
            st.sampled_from(["float16", "png", "json"]).map(lambda v: ("string_param", v)),
        ),
    ),
    max_size=3,
    unique_by=lambda kv: kv[0],
).filter(
    lambda kvs: (
        not (
            {"max_side", "resolution"} <= {k for k, _ in kvs}
            and ("resolution", ("string_param", "model")) in kvs
        )
    )
)


@st.composite
def careful_model_infer(draw) -> pb.ModelInferRequest:
    """A legal ModelInferRequest with, now and then, one part of it wrong."""
    if draw(st.integers(0, 5)) == 5:
        return draw(hostile_model_infer())
    req = pb.ModelInferRequest(model_name=MODEL, model_version=draw(st.sampled_from(["", "1"])))
    _set_parameters(
        req.parameters,
        mostly(
            draw, good_parameters, st.lists(st.tuples(PARAMETER_KEYS, parameter_values), max_size=3)
        ),
    )
    if draw(st.booleans()):
        elements = draw(st.lists(valid_images(max_side=96, strict=True), min_size=1, max_size=2))
        t = req.inputs.add(name="image_bytes", datatype="BYTES", shape=[len(elements)])
        if draw(st.booleans()):
            t.contents.bytes_contents.extend(elements)
        else:
            req.raw_input_contents.append(bytes_elements(elements, "ok", b""))
    else:
        n = draw(st.sampled_from([1, 2]))
        t = req.inputs.add(name="image", datatype="FP32", shape=[n, *IMAGE_SHAPE])
        fill = draw(st.sampled_from([0.0, 0.5]))
        if draw(st.integers(0, 3)) == 0:
            t.contents.fp32_contents.extend([fill] * (n * IMAGE_ELEMENTS))
        else:
            req.raw_input_contents.append(np.full(n * IMAGE_ELEMENTS, fill, "<f4").tobytes())
    for name in mostly(
        draw,
        st.lists(st.sampled_from(OUTPUT_NAMES), max_size=4, unique=True),
        st.lists(st.sampled_from([*OUTPUT_NAMES, "nope", "", f"{TASKS[0]}.nope"]), max_size=4),
    ):
        req.outputs.add(name=name)
    return req


@st.composite
def model_infer(draw) -> Call:
    """A ModelInfer call: mostly-valid half the time, hostile the other half."""
    message = draw(hostile_model_infer() if draw(st.booleans()) else careful_model_infer())
    return Call("ModelInfer", message)


@st.composite
def metadata_call(draw) -> Call:
    """One of ModelMetadata / ModelReady / ModelConfig (and the server-level calls)."""
    method = draw(
        st.sampled_from(
            [
                *("ModelMetadata", "ModelMetadata", "ModelReady", "ModelReady"),
                *("ModelConfig", "ModelConfig", "ModelStatistics", "ServerLive", "ServerReady"),
                *(
                    "ServerMetadata",
                    "RepositoryIndex",
                    "RepositoryModelLoad",
                    "RepositoryModelUnload",
                ),
            ]
        )
    )
    name = mostly(draw, st.just(MODEL), NAMES, one_in=2)
    version = mostly(draw, st.sampled_from(["", "1"]), GRPC_VERSIONS, one_in=2)
    build = {
        "ModelMetadata": lambda: pb.ModelMetadataRequest(name=name, version=version),
        "ModelReady": lambda: pb.ModelReadyRequest(name=name, version=version),
        "ModelConfig": lambda: pb.ModelConfigRequest(name=name, version=version),
        "ServerLive": pb.ServerLiveRequest,
        "ServerReady": pb.ServerReadyRequest,
        "ServerMetadata": pb.ServerMetadataRequest,
        "ModelStatistics": lambda: pb.ModelStatisticsRequest(name=name, version=version),
        "RepositoryIndex": lambda: pb.RepositoryIndexRequest(
            repository_name=name, ready=draw(st.booleans())
        ),
        "RepositoryModelLoad": lambda: pb.RepositoryModelLoadRequest(model_name=name),
        # never unload the model under test: the rest of the suite needs it
        "RepositoryModelUnload": lambda: pb.RepositoryModelUnloadRequest(
            model_name=name if name != MODEL else "nope"
        ),
    }[method]
    return Call(method, build())
