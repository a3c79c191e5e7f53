"""What every command that writes a store shares: its policy for unusable inputs and its summary.

``generate`` (images) and ``import`` (published maps) both read many inputs, some of which may
be unusable; ``on_error`` says whether such an input is listed in ``errors.jsonl`` (``"skip"``)
or stops the run (``"fail"``, finished shards kept). Both end by printing the same summary of
the store they wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, get_args

from relabel_store._progress import format_count, format_duration
from relabel_store.errors import ConfigurationError, InputError
from relabel_store.format.metadata import DEFAULT_SHARD_RECORDS, ERRORS_NAME

OnError = Literal["skip", "fail"]
"""``"skip"``: list an unusable input in ``errors.jsonl`` and go on; ``"fail"``: stop there."""

ON_ERROR: tuple[str, ...] = get_args(OnError)

__all__ = ["ON_ERROR", "OnError", "RunResult", "check_run_options", "input_failed", "run_summary"]


def check_run_options(*, on_error: object, workers: int | None, shard_records: int) -> None:
    """Refuse settings both commands share that they cannot run with
    (:class:`ConfigurationError`, naming the setting)."""
    if on_error not in ON_ERROR:
        raise ConfigurationError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if workers is not None and workers < 0:
        raise ConfigurationError(
            f"workers must be 0 (decode in this process) or more, got {workers}"
        )
    if shard_records < 1:
        raise ConfigurationError(
            f"shard_records must be at least 1, got {shard_records} (default: {DEFAULT_SHARD_RECORDS})"
        )


def input_failed(what: str, reason: str) -> InputError:
    """The error that stops an ``on_error="fail"`` run at an unusable input: ``what`` names the
    input (``annotate photos/cat.jpg (key 'cat')``), ``reason`` says what is wrong with it."""
    return InputError(
        f"cannot {what}: {reason}. Fix or remove it, or rerun with --on-error skip to list it "
        f"in {ERRORS_NAME} and go on; finished shards are kept."
    )


def run_summary(
    path: Path,
    *,
    records: int,
    skipped: int,
    done_now: int,
    unit: str,
    seconds: float,
    store_bytes: int,
    digest: str | None,
    already_complete: bool,
    before: Sequence[tuple[str, str]] = (),
    after: Sequence[tuple[str, str]] = (),
) -> str:
    """The lines a store-writing run ends with: the store, its records (and skipped inputs),
    the time and rate of this run, the size and the manifest digest. ``before``/``after``:
    ``(label, text)`` lines of the command's own, put after the store line and at the end."""
    store = f"{path}" + (" (already complete: nothing to do)" if already_complete else "")
    lines = [("store", store), *before]
    see = f", see {path / ERRORS_NAME}" if skipped else ""
    lines.append(("records", f"{records:,} ({skipped:,} skipped{see})"))
    if not already_complete:
        rate = done_now / seconds if seconds > 0 else 0.0
        lines.append(
            (
                "time",
                f"{format_duration(seconds)} for {done_now:,} {unit} "
                f"({format_count(rate, unit)}/s)",
            )
        )
    size = format_count(store_bytes, "B")
    if records:
        size += f" ({format_count(store_bytes / records, 'B')} per record)"
    lines += [("size", size), ("digest", f"{digest}"), *after]
    width = max(len(label) for label, _ in lines) + 3
    return "\n".join(f"{label + ':':<{width}}{text}" for label, text in lines)


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What a store-writing run did (``generate``, ``import``): ``records``/``skipped`` count the
    whole store, ``done_now`` what this run wrote (0 when the store was already complete)."""

    path: Path
    records: int
    skipped: int
    done_now: int
    seconds: float
    store_bytes: int
    digest: str | None  # None on ranks other than 0
    already_complete: bool = False  # the store was finished before this run: nothing was done

    #: What the run's inputs are called in its summary.
    unit: ClassVar[str] = "records"

    def summary(self) -> str:
        """What the command prints when it is done."""
        return run_summary(
            self.path,
            records=self.records,
            skipped=self.skipped,
            done_now=self.done_now,
            unit=self.unit,
            seconds=self.seconds,
            store_bytes=self.store_bytes,
            digest=self.digest,
            already_complete=self.already_complete,
            before=self.lines_before(),
            after=self.lines_after(),
        )

    def lines_before(self) -> list[tuple[str, str]]:
        """``(label, text)`` lines of the command's own, after the store line."""
        return []

    def lines_after(self) -> list[tuple[str, str]]:
        """``(label, text)`` lines of the command's own, at the end."""
        return []
