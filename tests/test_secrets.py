"""API keys never reach the store: not in a build's or refresh's recorded config, nor read back from older stores."""

import json

from pydantic import BaseModel, Field

from clado.backends.embed import EmbedSettings, OpenAIEmbedder
from clado.config import Config
from clado.pipeline.refresh import stored_config
from clado.redact import SECRET, without_secrets
from clado.taxonomy.store import Store
from tests.test_build import fake_build
from tests.test_refresh import run_refresh

LLM_KEY, EMBED_KEY = "sk-llm-0123456789", "emb-9876543210"


def keyed_config() -> Config:
    config = Config()
    config.llm.api_key, config.embed.api_key = LLM_KEY, EMBED_KEY
    return config


def test_no_file_of_a_build_and_refresh_holds_a_key(tmp_path):
    """Every byte under `out` (clado.db, its WAL, the exports) is free of both keys; the recorded config is the rest."""
    config = keyed_config()
    fake_build(tmp_path, config=config)
    out = tmp_path / "out"
    run_refresh(out, [{"id": "n1", "text": "the strap tore (99)"}])
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert LLM_KEY.encode() not in data and EMBED_KEY.encode() not in data, path
    with Store(out / "clado.db") as store:
        recorded = stored_config(store)
    assert recorded.stored() == config.stored() and recorded.llm.api_key == Config().llm.api_key
    assert recorded.embed.api_key is None


def test_keys_in_an_older_store_are_dropped_on_read(tmp_path, monkeypatch):
    """A run recorded with its keys (as before) reads back without them; the environment gives the keys again."""
    with Store(tmp_path / "clado.db") as store:
        run_id = store.start_run("build", keyed_config().model_dump(mode="json"))
        store.finish_run(run_id, "ok", {})
        recorded = stored_config(store)
    assert LLM_KEY not in json.dumps(recorded.model_dump()) and EMBED_KEY not in json.dumps(recorded.model_dump())
    monkeypatch.setenv("CLADO_EMBED_API_KEY", "from-env")
    settings = recorded.embed.model_copy(update={"backend": "openai", "base_url": "http://127.0.0.1:9/v1"})
    assert OpenAIEmbedder(settings).client.api_key == "from-env"


def test_secrets_are_found_inside_optional_sections():
    class Inner(BaseModel):
        token: str | None = Field(None, json_schema_extra=SECRET)
        port: int = 1

    class Outer(BaseModel):
        inner: Inner | None = None
        key: str = Field("k", json_schema_extra=SECRET)

    assert without_secrets(Outer, {"inner": {"token": "t", "port": 2}, "key": "k", "extra": 3}) == {
        "inner": {"port": 2},
        "extra": 3,
    }
    assert without_secrets(Outer, {"inner": None}) == {"inner": None}
    assert without_secrets(EmbedSettings, EmbedSettings(api_key="x").model_dump()).get("api_key", "gone") == "gone"
