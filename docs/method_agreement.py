"""Print the table of docs/method_agreement.md from the tests that back it.

Runs tests/unit/training/test_reference_agreement.py (agreement with LibMTL 1.1.5 or the paper,
one ``AGREEMENT|...`` line per comparison) and test_weighting_resume_and_scale.py (resume
exactness, loss-scale equivariance) in this process, and prints one Markdown row per registered
weighting: what was compared, the tolerance, the largest deviation measured, and each test's
outcome. Comparisons inside strict-xfail tests (known disagreements) are listed apart.

    .venv/bin/python docs/method_agreement.py
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
AGREEMENT = "tests/unit/training/test_reference_agreement.py"
RESUME_SCALE = "tests/unit/training/test_weighting_resume_and_scale.py"
RESUME = "test_resumes_exactly_from_a_checkpoint"
LOSS_SCALE = "test_gradients_do_not_depend_on_the_loss_scale"
GRADIENT_SCALE = "test_gradient_methods_scale_with_the_gradients"


class Collect:
    """A pytest plugin keeping each test's outcome and the AGREEMENT lines it printed."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}
        self.lines: list[tuple[str, str, str]] = []  # (nodeid, outcome, line)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            outcome = "xfail" if hasattr(report, "wasxfail") else report.outcome
            self.outcomes[report.nodeid] = outcome
            for line in report.capstdout.splitlines():
                if line.startswith("AGREEMENT|"):
                    self.lines.append((report.nodeid, outcome, line))


def generic(what: str) -> str:
    """The comparison without the problem it ran on (task count, step, epoch)."""
    return re.sub(r", \d+ tasks|, (step|epoch) \d+", "", what)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from training.weighting import WEIGHTINGS

    collect = Collect()
    with contextlib.redirect_stdout(sys.stderr):  # pytest's own report; the table goes to stdout
        code = pytest.main(
            ["-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT), AGREEMENT, RESUME_SCALE],
            plugins=[collect],
        )
    # (method, passed?) -> (reference, comparison, tolerance) -> [largest abs, largest rel]
    found: dict[tuple[str, bool], dict[tuple[str, str, str], list[float | None]]]
    found = defaultdict(dict)
    homogeneity: dict[tuple[str, str], list[Any]] = {}  # (method, scale) -> [outcome, largest abs]
    for _, outcome, line in collect.lines:
        _, method, reference, what, tolerance, diff, rel = line.split("|")
        if what.startswith("d(sJ)"):
            scale = what.rsplit("= ", 1)[1]
            entry = homogeneity.setdefault((method, scale), [outcome, 0.0])
            entry[1] = max(entry[1], float(diff))
            continue
        worst = found[method, outcome == "passed"].setdefault(
            (reference, generic(what), tolerance), [0.0, None]
        )
        worst[0] = max(worst[0] or 0.0, float(diff))
        if rel != "-":
            worst[1] = max(worst[1] or 0.0, float(rel))

    def outcome_of(test: str, name: str) -> str:
        pattern = re.compile(rf"::{test}\[{re.escape(name)}\]")
        hits = [o for nodeid, o in collect.outcomes.items() if pattern.search(nodeid)]
        return "-" if not hits else "passes" if set(hits) == {"passed"} else ", ".join(set(hits))

    def cell(entries: dict[tuple[str, str, str], list[float | None]]) -> str:
        return "<br>".join(
            f"{what} ({tol}): {a:.1e}" + (f" ({r:.1e})" if r is not None else "")
            for (_, what, tol), (a, r) in sorted(entries.items())
        )

    print(
        "| strategy | reference | compared (tolerance): largest deviation, absolute (relative to "
        "the reference's largest entry) | known disagreements (strict xfail) | resume exactness "
        f"(`{RESUME}`) | loss-scale equivariance (`{LOSS_SCALE}`) | gradient scale s "
        f"(`{GRADIENT_SCALE}`) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in WEIGHTINGS.names():
        agreed, missed = found.get((name, True), {}), found.get((name, False), {})
        references = sorted({ref for ref, _, _ in agreed} | {ref for ref, _, _ in missed})
        scales = [
            f"s = {scale}: {'passes' if outcome == 'passed' else outcome} ({diff:.1e})"
            for (method, scale), (outcome, diff) in sorted(homogeneity.items())
            if method == name
        ]
        print(
            f"| `{name}` | {'; '.join(references)} | {cell(agreed)} | {cell(missed) or '-'} "
            f"| {outcome_of(RESUME, name)} | {outcome_of(LOSS_SCALE, name)} "
            f"| {'<br>'.join(scales) or '-'} |"
        )
    counts: dict[str, int] = defaultdict(int)
    for outcome in collect.outcomes.values():
        counts[outcome] += 1
    print()
    print("pytest:", ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), f"(exit {code})")
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main())
