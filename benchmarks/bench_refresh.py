"""Benchmark: an incremental refresh with +10 % records against a full build, and classify latency over loopback.

    python benchmarks/bench_refresh.py --data ../shared/data/banking77.jsonl --sample 150 --llm small

Builds a taxonomy from a seeded sample (gold labels dropped), refreshes it with `extra` more records,
and reports both wall times and their ratio; then serves the store with uvicorn on 127.0.0.1 and sends
`requests` single-text /v1/classify calls one after another (p50/p95 latency). With `--llm small` one
embedded llama.cpp server is started first and shared by both runs (its start-up is in neither time);
`--llm none` times the --no-llm path. Prints one JSON object and writes it to --json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from clado.backends.embed import make_embedder
from clado.backends.llm import LLMSettings
from clado.backends.llm_runtime import llm_client
from clado.config import Config
from clado.pipeline.build import build_async
from clado.pipeline.refresh import LazyLLM, refresh_async
from clado.serve.app import RoutingService, create_app, server_config
from clado.serve.settings import ServeSettings
from clado.taxonomy.records import Record
from clado.taxonomy.store import Store

QUERIES = [
    "I want to cancel my card", "why was I charged twice", "my transfer has not arrived yet",
    "how do I change my PIN", "the app will not let me log in", "can I get a refund for this purchase",
]  # fmt: skip


def sample_records(path: Path, n: int, extra: int, seed: int) -> tuple[list[Record], list[Record]]:
    """Two disjoint seeded samples of {id, text} records (labels are never read)."""
    rows = [json.loads(line) for line in path.open()]
    picked = random.Random(seed).sample(rows, n + extra)
    records = [Record(id=str(r["id"]), text=r["text"], source_file=path.name) for r in picked]
    return records[:n], records[n:]


async def timed_runs(base: list[Record], extra: list[Record], *, config: Config, out: Path, no_llm: bool) -> dict:
    embedder = make_embedder(config.embed)
    with Store(out / "clado.db") as store:
        llm_context = nullcontext(None) if no_llm else llm_client(config.llm, seed=config.seed, store=store)
        async with llm_context as llm:
            started = time.perf_counter()
            built = await build_async(
                [], out=out, config=config, store=store, embedder=embedder, llm=llm, no_llm=no_llm, records=base
            )
            build_seconds = time.perf_counter() - started
            build_calls = llm.stats.calls if llm else 0
            lazy = LazyLLM(lambda: nullcontext(llm))
            started = time.perf_counter()
            refreshed = await refresh_async(
                [], out=out, config=config, store=store, embedder=embedder, llm=None if no_llm else lazy, records=extra,
            )  # fmt: skip
            refresh_seconds = time.perf_counter() - started
            refresh_calls = (llm.stats.calls if llm else 0) - build_calls
    s = refreshed.summary
    return {
        "build_seconds": round(build_seconds, 2),
        "refresh_seconds": round(refresh_seconds, 2),
        "refresh_over_build": round(refresh_seconds / build_seconds, 4),
        "build_stage_seconds": built.summary["seconds"],
        "refresh_stage_seconds": s["seconds"],
        "build_llm_calls": build_calls,
        "refresh_llm_calls": refresh_calls,
        "leaves": len(built.taxonomy.leaves()),
        "refresh": {
            k: s[k] for k in ("records_new", "assigned_existing", "pooled_new", "new_clusters", "rebuild_recommended")
        },
    }


def classify_latency(out: Path, *, config: Config, requests: int) -> dict:
    """p50/p95 of sequential single-text /v1/classify calls against uvicorn on 127.0.0.1."""
    with Store(out / "clado.db") as store:
        service = RoutingService(
            store, embedder=make_embedder(config.embed), settings=ServeSettings(reload_seconds=3600),
            embed=config.embed, routing=config.routing, min_cosine=config.refresh.assign_threshold,
        )  # fmt: skip
        settings = ServeSettings()
        app = create_app(service, token=None, settings=settings)
        server = uvicorn.Server(server_config(app, host="127.0.0.1", port=0, settings=settings))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            while not server.started:
                time.sleep(0.02)
            port = server.servers[0].sockets[0].getsockname()[1]
            seconds = []
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
                for k in range(requests + 10):
                    started = time.perf_counter()
                    response = http.post("/v1/classify", json={"texts": [QUERIES[k % len(QUERIES)]]})
                    response.raise_for_status()
                    if k >= 10:  # warm-up excluded
                        seconds.append(time.perf_counter() - started)
        finally:
            server.should_exit = True
            thread.join(10)
    ms = np.array(seconds) * 1000
    return {
        "requests": requests,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/banking77.jsonl"))
    parser.add_argument("--sample", type=int, default=150, help="Records in the full build")
    parser.add_argument("--extra-share", type=float, default=0.1, help="Refresh adds this share of --sample")
    parser.add_argument("--llm", choices=["small", "none"], default="small")
    parser.add_argument("--facets", default="support", help="Built-in facet set for the LLM runs")
    parser.add_argument("--requests", type=int, default=300, help="Classify calls for the latency figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/bench_refresh.json"))
    args = parser.parse_args()

    extra_n = max(1, round(args.sample * args.extra_share))
    base, extra = sample_records(args.data, args.sample, extra_n, args.seed)
    config = Config(seed=args.seed, llm=LLMSettings(local_model="small"))
    config.facets.set = args.facets
    with tempfile.TemporaryDirectory(prefix="clado-bench-refresh-") as scratch:
        out = Path(scratch)
        result = asyncio.run(timed_runs(base, extra, config=config, out=out, no_llm=args.llm == "none"))
        result["classify"] = classify_latency(out, config=config, requests=args.requests)
    report = {"data": str(args.data), "sample": args.sample, "extra": extra_n, "llm": args.llm, **result}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
