"""The `clado` command line: one module per command group, registered on the Typer app in `clado.cli.app`.

Exit codes (`clado.cli.app.failure_code`): 0 ok, 2 bad input (files, config, node ids, an unsafe bind, an LLM
server refusing the key or model or not there), 3 store busy (another writer holds the lock), 4 the LLM failed
(the circuit breaker opened, or too many records failed extraction), 1 anything else. build, refresh, edit and diff end with a one-line JSON summary on stdout.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings

from clado.cli import build, classify, edit, evaluate, refresh, serve, setup  # noqa: F401  (each registers its commands)
from clado.cli.app import app, console

__all__ = ["app", "main"]


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message="n_jobs value .* overridden", category=UserWarning)
    # SIGTERM (cron timeouts, kill) unwinds like Ctrl-C, so the embedded server and the store lock are released.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
