"""Run llama.cpp's OpenAI-compatible server (`llama_cpp.server`) as a child process for one GGUF file."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

log = logging.getLogger(__name__)

MAX_DEFAULT_THREADS = 8
LOG_TAIL_LINES = 40


class LocalServerError(RuntimeError):
    """The local model server could not be started."""


def default_threads() -> int:
    """All cores, at most `MAX_DEFAULT_THREADS` (token generation is memory-bound beyond that)."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_THREADS))


class LocalServer:
    """`python -m llama_cpp.server` on a free localhost port, stopped on exit (also on Ctrl-C).

    >>> with LocalServer(fetch_model("small")) as server:
    ...     client = openai.OpenAI(base_url=server.base_url, api_key="none")
    ...     client.chat.completions.create(model=server.model_name, messages=[...])
    """

    def __init__(
        self,
        model_path: Path | str,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 120.0,
        stop_grace: float = 10.0,
    ) -> None:
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.port = port
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.process: subprocess.Popen[bytes] | None = None
        self.model_name = ""

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. `http://127.0.0.1:PORT/v1`."""
        if self.port is None:
            raise LocalServerError("server not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LocalServer:
        """Start the server and wait until `GET /v1/models` answers; return self."""
        if self.process is not None:
            raise LocalServerError("server already started")
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model file not found: {self.model_path}")
        setting_names = _require_llama_cpp_server()
        self.port = self.port or _free_port()
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="clado-llama-server-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path), "--model_alias", self.model_path.stem,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
        ]  # fmt: skip
        # The server also reads its settings from same-named environment variables (API_KEY, SEED, CONFIG_FILE...).
        env = {key: value for key, value in os.environ.items() if key.lower() not in setting_names}
        log.info("starting llama.cpp server on port %d (log: %s)", self.port, self.log_path)
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
            )
        try:
            self.model_name = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate the server, killing it if it has not exited after `stop_grace` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=self.stop_grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_ready(self) -> str:
        """Poll `/v1/models` until it answers; return the model id it reports."""
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise LocalServerError(
                        f"llama.cpp server exited with code {self.process.returncode} while starting; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    response = client.get(f"{self.base_url}/models")
                except httpx.TransportError as error:
                    last = repr(error)
                else:
                    if response.status_code == 200:
                        return response.json()["data"][0]["id"]
                    last = f"HTTP {response.status_code}: {response.text[:200]}"
                time.sleep(0.2)
        raise LocalServerError(
            f"llama.cpp server did not answer GET /v1/models within {self.startup_timeout:.0f} s ({last}); "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server's log."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child: ask Linux to send SIGTERM when the parent dies (even by SIGKILL), so no server is orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _require_llama_cpp_server() -> set[str]:
    """The lower-case names of the server's settings; raise an install hint if the server is missing."""
    try:
        from llama_cpp.server.settings import Settings
    except ImportError as error:
        raise LocalServerError(
            "the local model server needs llama-cpp-python with its server extra: "
            "install the local extra with `pip install 'clado[local]'`"
        ) from error
    return {name.lower() for name in Settings.model_fields} | {"config_file"}
