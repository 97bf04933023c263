"""The embedded llama.cpp server: structured output, logprobs, the model id it reports, and clean shutdown."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import httpx
import openai
import pytest
from pydantic import BaseModel

from clado.backends.local_server import LocalServer, LocalServerError


class Pet(BaseModel):
    name: str
    legs: int
    kind: Literal["cat", "dog", "bird"]


def client_for(server: LocalServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


def test_missing_llama_cpp_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without llama-cpp-python the error says which extra to install."""
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp.server.settings", None)
    with pytest.raises(LocalServerError, match=r"pip install 'clado\[local\]'"):
        LocalServer(model).start()


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.gguf"):
        LocalServer(tmp_path / "nothing.gguf").start()


@pytest.mark.server
def test_reports_model_id_and_base_url(llm_server: LocalServer) -> None:
    """The model id is the file's stem, as listed by /v1/models."""
    assert llm_server.base_url == f"http://127.0.0.1:{llm_server.port}/v1"
    assert llm_server.model_name == llm_server.model_path.stem
    assert [m.id for m in client_for(llm_server).models.list().data] == [llm_server.model_name]


@pytest.mark.server
def test_chat_json_object_with_schema_is_valid(llm_server: LocalServer) -> None:
    """`response_format={"type": "json_object", "schema": ...}` constrains the output to the schema."""
    response = client_for(llm_server).chat.completions.create(
        model=llm_server.model_name,
        messages=[{"role": "user", "content": "Describe a pet as JSON: its name, number of legs and kind."}],
        response_format={"type": "json_object", "schema": Pet.model_json_schema()},  # type: ignore[typeddict-item]
        temperature=0,
        max_tokens=80,
    )
    pet = Pet.model_validate_json(response.choices[0].message.content or "")
    assert pet.legs >= 0


@pytest.mark.server
def test_openai_json_schema_dialect_is_refused(llm_server: LocalServer) -> None:
    """llama.cpp rejects the OpenAI `json_schema` form with HTTP 500; the LLM client's dialect probe keys on this."""
    json_schema = {"name": "Pet", "schema": Pet.model_json_schema()}
    response = httpx.post(
        f"{llm_server.base_url}/chat/completions",
        json={
            "model": llm_server.model_name,
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": json_schema},
            "max_tokens": 1,
        },
        timeout=60,
    )
    assert response.status_code == 500
    assert "Input should be 'text' or 'json_object'" in response.json()["error"]["message"]


@pytest.mark.server
def test_completion_logprobs_give_top_20(llm_server: LocalServer) -> None:
    """`/v1/completions` with `logprobs=20` returns the 20 most likely first tokens, the chosen one among them."""
    response = client_for(llm_server).completions.create(
        model=llm_server.model_name,
        prompt="Question: Is the sky blue on a clear day? Answer yes or no.\nAnswer:",
        max_tokens=1,
        logprobs=20,
        temperature=0,
    )
    logprobs = response.choices[0].logprobs
    assert logprobs is not None and logprobs.top_logprobs is not None
    top = logprobs.top_logprobs[0]
    assert len(top) == 20
    assert all(value <= 0 for value in top.values())
    assert response.choices[0].text in top
    assert top[response.choices[0].text] == max(top.values())


@pytest.mark.server
def test_process_is_gone_after_exit_even_on_ctrl_c(llm_server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second server is terminated when its block ends with KeyboardInterrupt.

    It also ignores the environment variables llama_cpp.server would read as settings (here API_KEY and PORT).
    """
    monkeypatch.setenv("API_KEY", "would-require-auth")
    monkeypatch.setenv("PORT", "1")
    with pytest.raises(KeyboardInterrupt):
        with LocalServer(llm_server.model_path, n_ctx=256, n_threads=1, startup_timeout=60) as server:
            process = server.process
            assert process is not None and process.poll() is None
            raise KeyboardInterrupt
    assert process.poll() is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.base_url}/models", timeout=2)


@pytest.mark.server
def test_server_that_dies_reports_its_log(llm_server: LocalServer, tmp_path: Path) -> None:
    """A file llama.cpp cannot load makes start() raise with the server's log tail (llm_server only gates the test)."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    with pytest.raises(LocalServerError, match="(?s)exited with code.*broken.gguf"):
        LocalServer(broken, log_path=tmp_path / "broken.log").start()


@pytest.mark.server
def test_server_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """A parent killed with SIGKILL leaves no orphaned llama.cpp server behind."""
    import os
    import signal
    import subprocess
    import time

    from clado.backends.model_fetch import fetch_model

    script = (
        "import sys, time\n"
        "from clado.backends.local_server import LocalServer\n"
        "server = LocalServer(sys.argv[1]).start()\n"
        "print(server.process.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(fetch_model("small", progress=False))], stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state in ("Z", "X"):  # exited, waiting to be reaped by init
            return
        time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the server outlived its killed parent")
