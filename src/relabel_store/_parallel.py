"""Running independent jobs (downloads, copies, decoding) on a thread pool."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def run_all(fn: Callable[[T], R], items: Iterable[T], threads: int) -> list[R]:
    """``[fn(x) for x in items]`` on up to ``threads`` threads. Every job runs to its end even
    when another fails (no download is abandoned half-way); then the first error is raised.
    One thread, or one job, runs on the calling thread (no pool to start)."""
    todo = list(items)
    if threads <= 1 or len(todo) <= 1:
        results: list[R] = []
        first: BaseException | None = None
        for x in todo:
            try:
                results.append(fn(x))
            except Exception as error:  # the rest still run, as on a pool
                first = first or error
        if first is not None:
            raise first
        return results
    futures: list[Future[R]] = []
    with ThreadPoolExecutor(max(1, min(threads, len(todo)))) as pool:
        futures = [pool.submit(fn, x) for x in todo]
    for f in futures:
        exc = f.exception()
        if exc is not None:
            raise exc
    return [f.result() for f in futures]
