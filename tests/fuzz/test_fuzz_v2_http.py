"""KServe v2 over HTTP under Hypothesis: JSON tensors, the binary extension, compressed bodies."""

import pytest
from hypothesis import given

from tests.fuzz.harness import examples, send_http
from tests.fuzz.strategies import v2_binary, v2_encoded, v2_get, v2_json

pytestmark = pytest.mark.timeout(300)


@examples(300)
@given(case=v2_json())
def test_v2_infer_json(gateway, case):
    send_http(gateway, "v2 json", case)


@examples(300)
@given(case=v2_binary())
def test_v2_infer_binary(gateway, case):
    send_http(gateway, "v2 binary", case)


@examples(160)
@given(case=v2_encoded())
def test_v2_content_encoding(gateway, case):
    send_http(gateway, "v2 content-encoding", case)


@examples(150)
@given(case=v2_get())
def test_v2_metadata_routes(gateway, case):
    send_http(gateway, "v2 metadata", case)
