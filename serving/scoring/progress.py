"""Progress of a scoring run: a live line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("polyhead.score")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts rows and errors; shows images/s, ETA and errors so far."""

    def __init__(
        self,
        total: int,
        done: int = 0,
        errors: int = 0,
        stream: TextIO | None = None,
        tty: bool | None = None,
        log_every_s: float = 10.0,
    ) -> None:
        """``done`` and ``errors`` count what earlier runs committed (a resumed run)."""
        self.total = total
        self.done = done
        self.errors = errors
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.log_every_s = log_every_s
        self._started = time.monotonic()
        self._resumed_from = done
        self._last_draw = 0.0

    @property
    def rate(self) -> float:
        """Images per second scored by this process."""
        elapsed = time.monotonic() - self._started
        return (self.done - self._resumed_from) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """The current state in one line."""
        pct = 100.0 * self.done / self.total if self.total else 100.0
        rate = self.rate
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_text = _duration(eta) if eta == eta else "?"
        return (
            f"scored {self.done:,}/{self.total:,} ({pct:5.1f}%)  {rate:,.1f} img/s  "
            f"ETA {eta_text}  errors {self.errors:,}"
        )

    def update(self, rows: int, errors: int) -> None:
        """Add ``rows`` scored, ``errors`` of them failed; redraw when it is time."""
        self.done += rows
        self.errors += errors
        now = time.monotonic()
        if self.tty and now - self._last_draw >= 0.2:
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()
            self._last_draw = now
        elif not self.tty and now - self._last_draw >= self.log_every_s:
            log.info(self.line())
            self._last_draw = now

    def close(self) -> None:
        """Finish the live line (the summary follows on its own line)."""
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()
        else:
            log.info(self.line())

    @property
    def elapsed(self) -> float:
        """Seconds since this process started scoring."""
        return time.monotonic() - self._started
