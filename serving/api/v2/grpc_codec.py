"""The gRPC form of v2 requests and responses (``inference.GRPCInferenceService`` messages).

An input's data comes either in ``raw_input_contents`` (one entry per input, in input order,
the binary form of ``serving.api.v2.binary``) or in its typed ``contents`` field; a request
that mixes the two is refused, as Triton does. FP16 has no typed field: raw contents only.
Outputs always go back in ``raw_output_contents``. The generated protocol modules are the ones
the ``tritonclient`` package ships.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from serving.api.v2.binary import from_bytes, to_bytes
from serving.api.v2.wire import (
    InferRequest,
    InferResponse,
    RequestedOutput,
    Tensor,
    check_datatype,
    check_name,
    check_shape,
    element_count,
)
from serving.errors import BadRequest

#: the typed ``contents`` field of each datatype
CONTENTS = {
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
_ALL_CONTENTS = sorted(set(CONTENTS.values()))


def parameter_value(p: pb.InferParameter) -> Any:
    """The value of an ``InferParameter`` (None when unset)."""
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


def parameters(params: Any, what: str) -> dict[str, Any]:
    """A parameter map as a dict; shared memory (which this server lacks) is refused."""
    out = {k: parameter_value(v) for k, v in params.items()}
    if "shared_memory_region" in out:
        raise BadRequest(f"{what}: shared memory is not supported; send the data in the request")
    return out


def _typed(t: Any, shape: tuple[int, ...]) -> np.ndarray:
    name = t.name
    dtype = check_datatype(name, t.datatype)
    field = CONTENTS.get(t.datatype)
    if field is None:
        raise BadRequest(f"input {name!r}: {t.datatype} data must be sent in raw_input_contents")
    others = [f for f in _ALL_CONTENTS if f != field and len(getattr(t.contents, f))]
    if others:
        raise BadRequest(f"input {name!r}: {t.datatype} data cannot be in {others[0]}")
    values = getattr(t.contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise BadRequest(
            f"input {name!r}: shape {list(shape)} needs {count} elements, "
            f"contents has {len(values)}"
        )
    if t.datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    try:
        return np.asarray(values, dtype=dtype).reshape(shape)
    except (OverflowError, ValueError) as e:
        raise BadRequest(f"input {name!r}: values do not fit {t.datatype}") from e


def parse_request(req: pb.ModelInferRequest) -> InferRequest:
    """A gRPC request as an ``InferRequest``; every field checked."""
    raw = req.raw_input_contents
    if not req.inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    if raw and len(raw) != len(req.inputs):
        raise BadRequest(
            f"{len(raw)} raw_input_contents entries for {len(req.inputs)} inputs: "
            "send raw contents for every input or for none"
        )
    inputs: list[Tensor] = []
    for i, t in enumerate(req.inputs):
        name = check_name(f"inputs[{i}]", t.name)
        if any(x.name == name for x in inputs):
            raise BadRequest(f"input {name!r} is given twice")
        check_datatype(name, t.datatype)
        shape = check_shape(name, list(t.shape))
        parameters(t.parameters, f"input {name!r}")
        if raw:
            if t.HasField("contents"):
                raise BadRequest(
                    f"input {name!r} has both typed contents and raw_input_contents: send one"
                )
            array = from_bytes(name, t.datatype, shape, raw[i])
        else:
            array = _typed(t, shape)
        inputs.append(Tensor(name, t.datatype, array))
    outputs: list[RequestedOutput] = []
    for i, o in enumerate(req.outputs):
        oname = check_name(f"outputs[{i}]", o.name)
        oparams = parameters(o.parameters, f"output {oname!r}")
        outputs.append(RequestedOutput(oname, True, oparams.get("classification")))
    params = parameters(req.parameters, "request")
    return InferRequest(
        req.model_name, req.model_version or None, inputs, outputs or None, req.id or None, params
    )


def render_response(resp: InferResponse) -> pb.ModelInferResponse:
    """A response as gRPC, every output in ``raw_output_contents``."""
    out = pb.ModelInferResponse(model_name=resp.model, model_version=resp.version, id=resp.id or "")
    for key, value in resp.parameters.items():
        out.parameters[key].string_param = str(value)
    for t in resp.outputs:
        out.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        out.raw_output_contents.append(to_bytes(t))
    return out
