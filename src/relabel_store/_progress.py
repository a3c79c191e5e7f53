"""Progress of a long step: a bar on a terminal, steady log lines everywhere else.

A job on a cluster writes stderr to a log file, where a tqdm bar becomes megabytes of carriage
returns; a person at a terminal wants the bar. :class:`Progress` does both: on a terminal it
draws a tqdm bar, otherwise it writes one line every ``interval`` seconds (count/total, rate,
ETA) and a last line when the step ends. Every long-running command shares it. The interval
defaults to ``$RELABEL_STORE_PROGRESS_INTERVAL`` seconds, or 30.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, TextIO

from relabel_store.errors import ConfigurationError

__all__ = ["INTERVAL_VARIABLE", "Progress", "format_count", "format_duration", "resumed"]

INTERVAL_VARIABLE = "RELABEL_STORE_PROGRESS_INTERVAL"
_DEFAULT_INTERVAL = 30.0


def default_interval() -> float:
    """Seconds between log lines: ``$RELABEL_STORE_PROGRESS_INTERVAL``, or 30."""
    raw = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not raw:
        return _DEFAULT_INTERVAL
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0.0 or seconds == float("inf"):
        raise ConfigurationError(
            f"{INTERVAL_VARIABLE}={raw!r}: give the seconds between progress lines as a "
            "number >= 0 (e.g. 60), or unset it for 30"
        )
    return seconds


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
    """A count or rate with its unit: byte counts in decimal multiples (``12.0 GB``), others
    with thousands separators (``1,102 maps``), one decimal below 10 (``3.4 images``)."""
    if unit == "B":
        for prefix in ("", "k", "M", "G", "T"):
            if abs(n) < 1000 or prefix == "T":
                return f"{n:.0f} B" if prefix == "" else f"{n:.1f} {prefix}B"
            n /= 1000
    if abs(n) < 10 and n != int(n):
        return f"{n:.1f} {unit}"
    return f"{n:,.0f} {unit}"


class Progress:
    """Reports how far a step of ``total`` units has come (``total=None``: unknown).

    ``show``: None picks a bar when ``stream`` (default stderr) is a terminal and log lines
    otherwise; True forces output (a bar on a terminal, lines elsewhere); False shows nothing.
    ``interval``: seconds between log lines (None: :func:`default_interval`). ``unit="B"``
    prints sizes in kB/MB/GB. ``position``: the bar's line, for one bar per process (torchrun
    ranks). :meth:`update` may be called from several threads.
    """

    def __init__(
        self,
        total: int | None,
        *,
        desc: str,
        unit: str = "records",
        show: bool | None = None,
        interval: float | None = None,
        stream: TextIO | None = None,
        position: int | None = None,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.count = 0
        self.interval = default_interval() if interval is None else interval
        self._lock = threading.Lock()
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
                position=position,
            )
        else:
            self._lines = True

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def update(self, n: int = 1) -> None:
        """Add ``n`` finished units."""
        with self._lock:
            self.count += n
            if self._bar is not None:
                self._bar.update(n)
            elif self._lines:
                now = time.monotonic()
                if now - self._last_line >= self.interval:
                    self._last_line = now
                    self._write(self.line())

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Print other messages inside this block: the bar steps aside and is redrawn after."""
        if self._bar is None or self._closed:
            yield
            return
        with self._lock, self._bar.external_write_mode(file=self._stream):
            yield

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

    def close(self, *, done: bool = True) -> None:
        """End the step: close the bar, or write a last line with the elapsed time (``done``
        False: the step failed, and the line says where it stopped)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._lines:
            ending = "done in" if done else "stopped after"
            self._write(f"{self.line()}, {ending} {format_duration(self.elapsed)}")

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
        self.close(done=exc_type is None)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def resumed(desc: str, done: int, shards: int) -> str:
    """A progress label that says how much of the store an earlier run wrote: its count and
    rate are then this run's, the rest of the store."""
    return desc if not done else f"{desc} (resumed: {done} of {shards} shards written before)"
