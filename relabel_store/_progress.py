"""Progress of a long step: a bar on a terminal, steady log lines everywhere else.

A job on a cluster writes stderr to a log file, where a tqdm bar becomes megabytes of carriage
returns; a person at a terminal wants the bar. :class:`Progress` does both: on a terminal it
draws a tqdm bar, otherwise it writes one line every ``interval`` seconds (count/total, rate,
ETA) and a last line when the step ends. Every long-running command shares it.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Progress", "format_count", "format_duration"]


def format_duration(seconds: float) -> str:
    """``3h02m``, ``17m05s``, ``42s``: short and unambiguous in a log line."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_count(n: float, unit: str) -> str:
    """A count with its unit; byte counts in decimal multiples (``12.0 GB``)."""
    if unit == "B":
        for prefix in ("", "k", "M", "G", "T"):
            if abs(n) < 1000 or prefix == "T":
                return f"{n:.0f} B" if prefix == "" else f"{n:.1f} {prefix}B"
            n /= 1000
    return f"{n:,.0f} {unit}"


class Progress:
    """Reports how far a step of ``total`` units has come (``total=None``: unknown).

    ``show``: None picks a bar when ``stream`` (default stderr) is a terminal and log lines
    otherwise; True forces output (a bar on a terminal, lines elsewhere); False shows nothing.
    ``interval``: seconds between log lines. ``unit="B"`` prints sizes in kB/MB/GB.
    """

    def __init__(
        self,
        total: int | None,
        *,
        desc: str,
        unit: str = "records",
        show: bool | None = None,
        interval: float = 30.0,
        stream: TextIO | None = None,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.count = 0
        self.interval = interval
        self._stream = stream if stream is not None else sys.stderr
        self._started = time.monotonic()
        self._last_line = self._started
        self._closed = False
        self._bar: Any = None
        self._lines = False
        if show is False:
            return
        if _isatty(self._stream):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                unit_scale=unit == "B",
                smoothing=0.05,
                file=self._stream,
                dynamic_ncols=True,
            )
        else:
            self._lines = True

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def update(self, n: int = 1) -> None:
        """Add ``n`` finished units."""
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._lines:
            now = time.monotonic()
            if now - self._last_line >= self.interval:
                self._last_line = now
                self._write(self.line())

    def line(self) -> str:
        """``desc: count/total (pct), rate, ETA``: the text of one log line."""
        elapsed = self.elapsed
        rate = self.count / elapsed if elapsed > 0 else 0.0
        if self.unit == "B":
            done = format_count(self.count, "B")
            total = format_count(self.total or 0, "B")
        else:
            done, total = f"{self.count:,}", f"{self.total or 0:,} {self.unit}"
        if self.total:
            pct = 100.0 * self.count / self.total
            text = f"{self.desc}: {done} of {total} ({pct:.1f}%)"
        else:
            text = f"{self.desc}: {done}" + ("" if self.unit == "B" else f" {self.unit}")
        text += f", {format_count(rate, self.unit)}/s"
        if self.total and rate > 0 and self.count < self.total:
            text += f", ETA {format_duration((self.total - self.count) / rate)}"
        return text

    def close(self) -> None:
        """End the step: close the bar, or write a last line with the elapsed time."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._lines:
            self._write(f"{self.line()}, done in {format_duration(self.elapsed)}")

    def _write(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
