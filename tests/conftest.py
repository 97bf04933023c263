"""Shared session fixtures."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

from clado.backends.local_server import LocalServer
from clado.backends.model_fetch import fetch_model


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """One llama.cpp server with the `small` model for the whole session; for tests marked `server`.

    Skipped only when CLADO_SKIP_SERVER_TESTS=1; a missing llama-cpp-python fails the tests.
    """
    if os.environ.get("CLADO_SKIP_SERVER_TESTS") == "1":
        pytest.skip("CLADO_SKIP_SERVER_TESTS=1")
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail(
            "server tests need llama-cpp-python: pip install 'clado[local]' "
            "(or set CLADO_SKIP_SERVER_TESTS=1 to skip them)",
            pytrace=False,
        )
    model = fetch_model("small", progress=False)
    with LocalServer(model, log_path=tmp_path_factory.mktemp("llm_server") / "server.log") as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests in test_resilience_*.py carry the `resilience` mark, so `-m resilience` runs that suite alone."""
    for item in items:
        if item.path.name.startswith("test_resilience_"):
            item.add_marker(pytest.mark.resilience)
