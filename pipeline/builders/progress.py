"""Build output for people: one live status line on a terminal, plain lines elsewhere (CI logs).

On a terminal the line shows the current Dockerfile step and the last line it printed, rewritten
in place and erased at the end. Without a terminal every line is printed as it comes, indented,
so a CI log shows the whole build.
"""

from __future__ import annotations

import re
import shutil
import sys
from typing import TextIO

_STEP = re.compile(r"^Step (\d+/\d+) : (.*)$")


class BuildProgress:
    def __init__(self, stream: TextIO | None = None, tty: bool | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.step = ""
        self._shown = False

    def __call__(self, line: str) -> None:
        match = _STEP.match(line)
        if match:
            self.step = f"step {match.group(1)}: {match.group(2)}"
        if not self.tty:
            self.stream.write(f"    {line}\n")
            self.stream.flush()
            return
        width = shutil.get_terminal_size((100, 20)).columns - 1
        text = self.step if match or not self.step else f"{self.step[:50]} | {line.strip()}"
        self.stream.write("\r\033[K" + text[:width])
        self.stream.flush()
        self._shown = True

    def end(self) -> None:
        """Erase the status line (the caller prints the outcome)."""
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False
