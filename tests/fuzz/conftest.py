"""One gateway (HTTP + gRPC, the bundled model_repo) for the whole fuzz session.

After every test (a batch of cases) and every ``CHECK_EVERY`` requests inside one, the gateway
must still be running and answer a good /v1 predict and a v2 FP32 infer (HTTP and gRPC)
correctly. A gateway that died is restarted so the next batch still runs. The run ends with the
number of requests sent and every distinct failure found, smallest request first seen.
"""

from __future__ import annotations

import shutil
import time

import pytest

from tests.fuzz import harness


@pytest.fixture(scope="session")
def gateway():
    """The gateway under test, started once; yields a ``harness.Gateway``."""
    work = harness.workdir()
    gw = harness.Gateway(work)
    gw.start()
    problems = harness.good_requests(gw)  # the reference answers, before any fuzzing
    assert not problems, problems
    try:
        yield gw
    finally:
        gw.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(autouse=True)
def still_answering(request, gateway):
    """After each batch: alive, and good requests answered correctly (restart if it died)."""
    harness.HEALTH_FAILURES.clear()
    yield
    problems = list(harness.HEALTH_FAILURES) + harness.good_requests(gateway)
    harness.HEALTH_FAILURES.clear()
    if not gateway.alive():
        tail = gateway.log_tail()
        gateway.stop()
        gateway.start()
        problems.append(f"gateway restarted; its log ended with:\n{tail}")
    if problems:
        rec = harness.FAULTS.setdefault(
            "good request failed after a batch",
            harness.FaultRecord("good request failed after a batch", "-", problems[0], 0),
        )
        rec.count += 1
        rec.tests.add(request.node.name)
        pytest.fail("after this batch of cases: " + "; ".join(problems), pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Requests sent, by category, and the distinct failures."""
    if not harness.COUNTS:
        return
    tr = terminalreporter
    tr.section("fuzz summary")
    counts = harness.COUNTS
    fuzz = sum(v for k, v in counts.items() if k != "good-request checks")
    elapsed = time.monotonic() - harness.STARTED
    tr.write_line(
        f"{fuzz} fuzz requests sent (+ {counts['good-request checks']} good-request checks) "
        f"in {elapsed:.0f} s; example scale {harness.SCALE:g}, shrinking "
        f"{'on' if harness.SHRINK else 'off'}"
    )
    for name, n in sorted(counts.items()):
        answers = harness.ANSWERS.get(name, {})
        tally = " ".join(f"{code}:{k}" for code, k in sorted(answers.items()))
        tr.write_line(f"  {name:<24} {n:>6}  {tally}")
    if harness.FAULTS:
        tr.write_line(f"{len(harness.FAULTS)} distinct failures:")
        for i, rec in enumerate(sorted(harness.FAULTS.values(), key=lambda r: r.signature), 1):
            tr.write_line(f"[{i}] {rec.signature}")
            tr.write_line(f"    seen {rec.count}x in {', '.join(sorted(rec.tests))}")
            tr.write_line(f"    smallest request: {rec.request}")
            tr.write_line(f"    response: {rec.response}")
