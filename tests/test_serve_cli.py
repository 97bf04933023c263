"""`clado serve` from the command line: the token never on it (refused there; read from CLADO_SERVE_TOKEN or
`--token-file`), and the real process on loopback showing neither its token in `ps` nor details to strangers."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from clado.backends.embed import make_embedder
from clado.cli import app
from clado.cli.serve import read_token
from clado.config import Config
from clado.pipeline.build import build_async
from clado.serve.app import ServeError
from clado.taxonomy.store import Store
from tests.fakes import FakeEmbedder
from tests.local_server import json_server
from tests.test_refresh import base_rows, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "tok-5f1c9e0b7d"
runner = CliRunner()


def test_a_token_on_the_command_line_is_refused(tmp_path):
    result = runner.invoke(app, ["serve", "--store", str(tmp_path), "--token", TOKEN])
    assert result.exit_code == 2
    assert "visible to every user in `ps`" in result.output and "--token-file" in result.output


def test_the_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CLADO_SERVE_TOKEN", "from-env")
    assert read_token(None) == "from-env"
    (tmp_path / "token").write_text(f"{TOKEN}\n")
    assert read_token(tmp_path / "token") == TOKEN
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ServeError, match="empty"):
        read_token(tmp_path / "empty")
    with pytest.raises(ServeError, match="cannot read"):
        read_token(tmp_path / "missing")
    monkeypatch.delenv("CLADO_SERVE_TOKEN")
    assert read_token(None) is None


def embeddings(path, body):
    vectors = FakeEmbedder().embed(body["input"])
    data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
    return 200, {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_serve_process_shows_no_token_and_tells_strangers_only_ok(tmp_path):
    """A --no-llm build embedded through an OpenAI-compatible fake, then `clado serve --token-file` as a real
    process: its command line holds no token, /healthz says only ok without it, /v1 needs it."""
    with json_server(embeddings) as embed_server:
        config = Config.model_validate(
            {"embed": {"backend": "openai", "base_url": f"{embed_server.url}/v1", "model": "fake"},
             "output": {"map": False}}
        )  # fmt: skip
        out = tmp_path / "out"
        data = write_jsonl(tmp_path / "reviews.jsonl", base_rows())
        with Store(out / "clado.db") as store:
            asyncio.run(build_async([data], out=out, config=config, store=store, embedder=make_embedder(config.embed),
                                    llm=None, no_llm=True))  # fmt: skip
        (tmp_path / "token").write_text(TOKEN + "\n")
        port = free_port()
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        env.pop("CLADO_SERVE_TOKEN", None)
        args = [sys.executable, "-m", "clado.cli", "serve", "--store", str(out), "--port", str(port),
                "--token-file", str(tmp_path / "token")]  # fmt: skip
        log = tmp_path / "serve.log"
        process = subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    health = httpx.get(f"{url}/healthz", timeout=2)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "clado serve did not start"
                    time.sleep(0.2)
            cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
            assert TOKEN.encode() not in cmdline and b"--token-file" in cmdline
            assert health.json() == {"status": "ok"} and "server" not in health.headers
            assert httpx.get(f"{url}/v1/taxonomy").status_code == 401
            authorised = {"Authorization": f"Bearer {TOKEN}"}
            assert httpx.get(f"{url}/healthz", headers=authorised).json()["version"] == 1
            answer = httpx.post(f"{url}/v1/classify", json={"texts": ["battery drains fast"]}, headers=authorised)
            assert answer.status_code == 200 and len(answer.json()["results"]) == 1
        finally:
            process.terminate()
            process.wait(20)
