"""The routing API: classification against a fake build, limits, tokens, the bind guard, reloads, and a real
uvicorn on loopback under a bounded load."""

import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from clado.config import Config
from clado.pipeline.classify import query_template_for
from clado.serve import app as serve_app
from clado.serve.app import RoutingService, ServeError, check_bind, create_app, server_config
from clado.serve.settings import ServeSettings
from clado.taxonomy.store import Store
from tests.fakes import FakeEmbedder
from tests.test_refresh import BASE, NEW_DAY, build_fake, run_refresh

LOAD_REQUESTS = 2000
LOAD_THREADS = 8


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_fake(tmp_path_factory.mktemp("serve"))


# Queries worded as the fake build's items are: its calibration is fitted on the items, and its 12 copies of each
# text make every member's cosine near 1, so a text missing the aspect line would rightly look new there.
SETTINGS = ServeSettings(reload_seconds=3600, query_template="{text}")


def worded(aspect, issue):
    return f"Aspect: {aspect}\nIssue: {issue}"


@pytest.fixture(scope="module")
def service(built):
    with Store(built / "clado.db") as store:
        yield RoutingService(store, embedder=FakeEmbedder(), settings=SETTINGS)


def client(service, *, token=None, **limits):
    return TestClient(create_app(service, token=token, settings=ServeSettings(**limits)))


def topic_of(item_id):
    """The topic of a `base_rows()` item: record r<i> is about BASE[i % 4]."""
    return BASE[int(item_id.split("#")[0][1:]) % 4]


def test_query_template_follows_the_clustered_facet_line(built):
    with Store(built / "clado.db") as store:
        auto = RoutingService(store, embedder=FakeEmbedder(), settings=ServeSettings())
        assert auto.current().template == "Issue: {text}"
    assert (
        query_template_for(["Aspect: battery\nIssue: drains fast", "Aspect: strap\nIssue: it broke off quickly"])
        == "Issue: {text}"
    )
    assert query_template_for(["Request: write a poem about cats\nTask: creative writing"]) == "Request: {text}"
    assert query_template_for(["Intent: cancel my order"]) == "Intent: {text}"
    assert query_template_for(["Aspect: battery\nIssue: drains", "just a raw review"]) == "{text}"
    assert query_template_for([]) == "{text}"


def test_texts_route_to_their_topic_and_strangers_are_new(service):
    index = service.current()
    battery, stranger = index.classify([worded("battery", "battery drains fast"), "quantum zebra migration"])
    leaf = index.taxonomy.by_id()[battery.path[-1].id]
    assert leaf.level == 0 and {topic_of(m) for m in leaf.member_ids} == {"battery"}
    assert [s.level for s in battery.path] == sorted((s.level for s in battery.path), reverse=True)
    assert battery.path[0].id in {n.id for n in index.taxonomy.roots()}
    assert battery.probability >= index.threshold and not battery.is_new
    assert stranger.probability < index.threshold and stranger.is_new
    probabilities = [battery.probability] + [a.probability for a in battery.alternatives]
    assert len(battery.alternatives) == 3 and probabilities == sorted(probabilities, reverse=True)
    assert battery.path[-1].id not in {a.id for a in battery.alternatives}


def test_endpoints(service):
    api = client(service)
    health = api.get("/healthz").json()
    assert health["status"] == "ok" and health["version"] == 1 and health["leaves"] == len(service.current().leaves)
    body = api.get("/v1/taxonomy").json()
    assert {n["id"] for n in body["nodes"]} == {n.id for n in service.current().taxonomy.nodes}
    answer = api.post(
        "/v1/classify",
        json={
            "texts": [worded("strap", "strap snapped off"), "quantum zebra", worded("delivery", "delivery took weeks")]
        },
    )
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["is_new"] for r in results] == [False, True, False] and answer.json()[
        "threshold"
    ] == service.current().threshold
    assert results[0]["path"][-1]["id"] != results[2]["path"][-1]["id"]


def test_limits_give_clear_4xx(service):
    api = client(service, max_batch=2, max_text_chars=50, max_body_bytes=2048)
    cases = {
        "empty": api.post("/v1/classify", json={"texts": []}),
        "batch": api.post("/v1/classify", json={"texts": ["a", "b", "c"]}),
        "long": api.post("/v1/classify", json={"texts": ["x" * 51]}),
        "shape": api.post("/v1/classify", json={"text": "a"}),
        "json": api.post("/v1/classify", content=b"{not json", headers={"content-type": "application/json"}),
        "declared": api.post("/v1/classify", json={"texts": ["y" * 3000]}),
        "streamed": api.post("/v1/classify", content=iter([b'{"texts": ["' + b"z" * 1500, b"z" * 1500 + b'"]}']),
                             headers={"content-type": "application/json"}),
    }  # fmt: skip
    assert {k: r.status_code for k, r in cases.items()} == {
        "empty": 422, "batch": 422, "long": 422, "shape": 422, "json": 422, "declared": 413, "streamed": 413
    }  # fmt: skip
    assert "at most 2" in cases["batch"].json()["detail"] and "longer than 50" in cases["long"].json()["detail"]
    assert "larger than 2048 bytes" in cases["declared"].json()["detail"]


def test_token_is_required_on_v1_routes_when_configured(service):
    api = client(service, token="s3cret")
    body = {"texts": ["battery drains fast"]}
    missing = api.post("/v1/classify", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert api.post("/v1/classify", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.get("/v1/taxonomy").status_code == 401
    assert api.post("/v1/classify", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert api.get("/healthz").status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.com"])
def test_binding_beyond_loopback_needs_a_token(host):
    with pytest.raises(ServeError, match="without a token"):
        check_bind(host, None)
    check_bind(host, "s3cret")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_token(host):
    check_bind(host, None)


def test_a_refresh_is_picked_up_without_a_restart(built, tmp_path):
    shutil.copytree(built, tmp_path / "out")
    with Store(tmp_path / "out" / "clado.db") as store:
        live = RoutingService(
            store, embedder=FakeEmbedder(), settings=SETTINGS.model_copy(update={"reload_seconds": 0})
        )
        assert live.current().version == 1
        result, _ = run_refresh(tmp_path / "out", NEW_DAY)
        assert live.current().version == result.taxonomy.version == 2
        (screen,) = live.current().classify([worded("screen", "screen flickers constantly")])
        assert not screen.is_new and screen.path[-1].id not in {n.id for n in service_leaves(built)}


def service_leaves(out):
    with Store(out / "clado.db") as store:
        return store.taxonomy().leaves()


@contextmanager
def running(app, settings=None):
    """A real uvicorn with the `serve` settings on 127.0.0.1 in a thread; yields its port."""
    config = server_config(app, host="127.0.0.1", port=0, settings=settings or ServeSettings())
    config.access_log = False
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()


def test_real_uvicorn_on_loopback_serves_a_bounded_load_without_errors(service):
    with running(create_app(service, token="t0ken", settings=ServeSettings())) as port:
        local = threading.local()
        texts = ["battery drains fast", "strap snapped off", "quantum zebra", "package arrived late"]

        def one(k):
            if not hasattr(local, "http"):
                local.http = httpx.Client(
                    base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer t0ken"}
                )
            response = local.http.post("/v1/classify", json={"texts": [texts[k % 4]]})
            return response.status_code == 200 and len(response.json()["results"]) == 1

        started = time.monotonic()
        with ThreadPoolExecutor(LOAD_THREADS) as pool:
            ok = list(pool.map(one, range(LOAD_REQUESTS)))
        elapsed = time.monotonic() - started
        assert ok.count(False) == 0 and len(ok) == LOAD_REQUESTS
        assert elapsed < 60


def raw_request(port, head: bytes, body: bytes = b"", *, timeout=5.0) -> bytes:
    """Send `head` (request line and headers) and `body` on a fresh socket; the first bytes of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + b"\r\n\r\n" + body)
        return sock.recv(65536)


def test_a_stranger_is_refused_before_the_body_is_read(service):
    """A client without the token that declares 900 kB and sends 1 kB gets 401 at once; nothing read its body."""
    reads = []
    app = create_app(service, token="t0ken", settings=ServeSettings())

    async def spy(scope, receive, send):
        async def counted():
            reads.append(scope.get("path"))
            return await receive()

        await app(scope, counted, send)

    head = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 900000"
    with running(spy) as port:
        assert raw_request(port, head, b"x" * 1000).startswith(b"HTTP/1.1 401")
        chunked = head.replace(b"Content-Length: 900000", b"Transfer-Encoding: chunked")
        assert raw_request(port, chunked, b"10000\r\n" + b"y" * 65536).startswith(b"HTTP/1.1 401")
    assert "/v1/classify" not in reads


def test_healthz_says_only_ok_without_the_token(service):
    api = client(service, token="s3cret")
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/healthz", headers={"Authorization": "Bearer wrong"}).json() == {"status": "ok"}
    details = api.get("/healthz", headers={"Authorization": "Bearer s3cret"}).json()
    assert details["version"] == 1 and details["embed_model"] == "fake-embedder"
    assert api.get("/nowhere").status_code == 401, "a stranger learns nothing about the routes either"


def test_connections_are_bounded_and_slow_or_idle_clients_cut_off(service):
    """limit_concurrency: 503 beyond it; an idle keep-alive connection is closed; a body that does not arrive
    within the request timeout gets 408."""
    settings = ServeSettings(limit_concurrency=2, keep_alive_seconds=0.3, request_timeout_seconds=0.5)
    auth = b"Authorization: Bearer t0ken"
    with running(create_app(service, token="t0ken", settings=settings), settings) as port:
        with socket.create_connection(("127.0.0.1", port)):  # holds a connection open, sending nothing
            time.sleep(0.1)
            assert raw_request(port, b"GET /healthz HTTP/1.1\r\nHost: x").startswith(b"HTTP/1.1 503")
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            assert sock.recv(65536) == b"" and time.monotonic() - started < 3, "idle keep-alive closed"
        slow = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n" + auth
        started = time.monotonic()
        assert raw_request(port, slow, b'{"texts": [').startswith(b"HTTP/1.1 408") and time.monotonic() - started < 3


def test_serve_takes_its_limits_and_threshold_from_the_config_file(built, tmp_path, monkeypatch):
    """[serve] and [refresh] in the TOML reach `serve`: uvicorn's limits, the batch limit, the lowest cosine of a
    known topic (refresh.assign_threshold)."""
    toml = tmp_path / "clado.toml"
    toml.write_text("[serve]\nmax_batch = 3\nlimit_concurrency = 7\nkeep_alive_seconds = 2.5\n"
                    "[refresh]\nassign_threshold = 1.01\n")  # fmt: skip
    seen = {}

    class RecordingServer:
        """Stands in for uvicorn.Server: records its config and answers two requests in process."""

        def __init__(self, config):
            seen["limits"] = (config.limit_concurrency, config.timeout_keep_alive)
            self.app = config.app

        def run(self):
            api = TestClient(self.app)
            seen["over"] = api.post("/v1/classify", json={"texts": ["battery"] * 4}).status_code
            answer = api.post("/v1/classify", json={"texts": ["battery drains fast"] * 3}).json()
            seen["all_new"] = all(hit["is_new"] for hit in answer["results"])  # no cosine reaches 1.01

    monkeypatch.setattr(uvicorn, "Server", RecordingServer)
    monkeypatch.setattr(serve_app, "make_embedder", lambda settings: FakeEmbedder())
    serve_app.serve(built, config=Config.load(toml))
    assert seen == {"limits": (7, 2.5), "over": 422, "all_new": True}
