"""One progress display for every long stage (rich; quiet when CLADO_QUIET is set)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_bar(description: str, *, total: int) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n=1)`; shows a bar on stderr unless there is nothing to do or CLADO_QUIET=1."""
    disabled = total <= 0 or os.environ.get("CLADO_QUIET") == "1"
    progress = Progress(
        TextColumn("[bold]{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=disabled,
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
