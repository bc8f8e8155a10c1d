"""What native libraries write straight to the process's file descriptors (TVM's runtime logs to standard
error, HiGHS prints to standard output), held back and written through without the lines that say nothing
to a user."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def lines_dropped(fd: int, dropped: re.Pattern[bytes]) -> Iterator[None]:
    """Hold back what is written to file descriptor ``fd`` (1 or 2) in the ``with`` body, then write it
    through except the lines that match ``dropped``."""
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), fd)
        try:
            yield
        finally:
            stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True) if not dropped.match(line)]
            if kept:
                os.write(fd, b"".join(kept))
