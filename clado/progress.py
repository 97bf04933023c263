"""One progress display for every long stage: a bar on a terminal, a line per 10% with the time left in logs (cron),
none with CLADO_QUIET=1."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Advance(Protocol):
    """Moves a progress display on by `n` steps."""

    def __call__(self, n: int = 1) -> None: ...


def _no_progress(n: int = 1) -> None:
    return None


@contextmanager
def progress_bar(description: str, *, total: int) -> Iterator[Advance]:
    """Yield `advance(n=1)` for a stage of `total` steps."""
    if total <= 0 or os.environ.get("CLADO_QUIET") == "1":
        yield _no_progress
    elif not sys.stderr.isatty():
        with _log_lines(description, total) as advance:
            yield advance
    else:
        columns = (
            TextColumn("[bold]{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns) as progress:
            task = progress.add_task(description, total=total)

            def advance(n: int = 1) -> None:
                progress.advance(task, n)

            yield advance


@contextmanager
def _log_lines(description: str, total: int) -> Iterator[Advance]:
    start = time.perf_counter()
    done = 0
    next_report = max(1, total // 10)

    def advance(n: int = 1) -> None:
        nonlocal done, next_report
        done += n
        if done >= next_report or done == total:
            elapsed = time.perf_counter() - start
            left = f", about {elapsed * (total - done) / done:.0f} s left" if done < total else ""
            print(f"{description}: {done}/{total} ({elapsed:.0f} s{left})", file=sys.stderr, flush=True)
            next_report = done + max(1, total // 10)

    yield advance
