"""/v1 under Hypothesis: multipart, JSON/base64 and raw predict bodies, odd query parameters."""

import pytest
from hypothesis import given

from tests.fuzz.harness import examples, send_http
from tests.fuzz.strategies import v1_get, v1_json, v1_multipart, v1_raw

pytestmark = pytest.mark.timeout(300)


@examples(200)
@given(case=v1_multipart())
def test_v1_predict_multipart(gateway, case):
    send_http(gateway, "v1 multipart", case)


@examples(200)
@given(case=v1_json())
def test_v1_predict_json(gateway, case):
    send_http(gateway, "v1 json", case)


@examples(200)
@given(case=v1_raw())
def test_v1_predict_raw_body(gateway, case):
    send_http(gateway, "v1 raw", case)


@examples(80)
@given(case=v1_get())
def test_v1_model_routes(gateway, case):
    send_http(gateway, "v1 metadata", case)
