"""Progress lines for long work (measuring, searching): a bar with counts, rewritten at most once a
second on a terminal, one line per update otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts ``total`` steps of ``label``; :meth:`advance` after each, :meth:`close` at the end."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, interval_s: float = 1.0,
                 width: int = 30):
        self.total = max(total, 0)
        self.label = label
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.width = width
        self.done = 0
        self.failed = 0
        self.start = time.monotonic()
        self._shown = 0.0
        self._terminal = hasattr(self.stream, "isatty") and self.stream.isatty()

    def advance(self, count: int = 1, failed: bool = False, note: str = "") -> None:
        self.done += count
        self.failed += count if failed else 0
        now = time.monotonic()
        if self.done >= self.total or now - self._shown >= self.interval_s:
            self._shown = now
            self._show(note)

    def extend(self, count: int) -> None:
        """Add ``count`` steps to the total: work found to be needed on the way."""
        self.total += count

    def _show(self, note: str = "") -> None:
        filled = self.width * self.done // self.total if self.total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        failed = f", {self.failed} failed" if self.failed else ""
        text = (f"{self.label} [{bar}] {self.done}/{self.total}{failed} "
                f"{time.monotonic() - self.start:.0f} s{' ' + note if note else ''}")
        self.stream.write(("\r" + text) if self._terminal else (text + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self._terminal:
            self.stream.write("\n")
            self.stream.flush()
