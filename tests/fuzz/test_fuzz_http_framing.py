"""Raw HTTP/1.1 framing under Hypothesis: what the connection layer below the app must handle."""

import pytest
from hypothesis import given

from tests.fuzz.framing import raw_requests, send_raw
from tests.fuzz.harness import examples

pytestmark = pytest.mark.timeout(300)


@examples(150)
@given(case=raw_requests())
def test_http_framing(gateway, case):
    send_raw(gateway, "raw http framing", case)
