"""KServe v2 gRPC under Hypothesis: random protobuf field values for every implemented RPC."""

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.grpc_strategies import metadata_call, model_infer
from tests.fuzz.harness import call_grpc, call_grpc_stream, examples

pytestmark = pytest.mark.timeout(300)


COMPRESSION = st.sampled_from([None, None, grpc.Compression.Gzip, grpc.Compression.Deflate])


@examples(300)
@given(call=model_infer(), compression=COMPRESSION)
def test_grpc_model_infer(gateway, call, compression):
    call_grpc(gateway, "grpc ModelInfer", call.method, call.message, compression)


@examples(200)
@given(call=metadata_call())
def test_grpc_metadata_ready_config(gateway, call):
    call_grpc(gateway, "grpc metadata", call.method, call.message)


@examples(30)
@given(calls=st.lists(model_infer(), min_size=1, max_size=3))
def test_grpc_stream_infer(gateway, calls):
    call_grpc_stream(gateway, "grpc ModelStreamInfer", [c.message for c in calls])
