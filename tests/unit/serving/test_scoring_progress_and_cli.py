"""Scoring progress output, and ``--ray`` with or without an address on the command line."""

from __future__ import annotations

import io
import logging

from polyhead.cli import with_optional_values
from serving.scoring.progress import Progress


def test_terminal_gets_one_redrawn_line_with_rate_eta_and_errors():
    out = io.StringIO()
    p = Progress(total=10, done=4, errors=1, stream=out, tty=True)
    p._last_draw = -1.0
    p.update(3, 1)
    p.close()
    text = out.getvalue()
    assert text.startswith("\rscored 7/10 ( 70.0%)") and "errors 2" in text and "ETA" in text
    assert text.endswith("errors 2\x1b[K\n")


def test_no_terminal_gets_log_lines(caplog):
    out = io.StringIO()
    with caplog.at_level(logging.INFO, logger="polyhead.score"):
        p = Progress(total=2, stream=out, tty=False, log_every_s=0.0)
        p.update(2, 0)
        p.close()
    assert out.getvalue() == ""
    assert any("scored 2/2 (100.0%)" in r.getMessage() for r in caplog.records)


def test_rate_counts_only_this_process_work():
    p = Progress(total=100, done=90, stream=io.StringIO(), tty=False, log_every_s=1e9)
    assert p.rate == 0.0  # the 90 resumed rows are not this run's throughput


def test_bare_ray_flag_means_a_local_ray():
    assert with_optional_values(["score", "--ray"]) == ["score", "--ray", "local"]
    assert with_optional_values(["score", "--ray", "--workers", "2"]) == [
        "score",
        "--ray",
        "local",
        "--workers",
        "2",
    ]
    assert with_optional_values(["score", "--ray", "head:6379"]) == ["score", "--ray", "head:6379"]
