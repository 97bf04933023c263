"""Benchmark a full build against one LLM server and compare its extraction stage with a bare concurrent loop.

    python benchmarks/bench_build.py examples/reviews.jsonl --local-model small --json out/bench.json

Prints and writes: wall time per stage, peak memory, LLM calls / tokens / cache hits, the server's saturated
throughput measured by a bare loop over the same facet prompts, and the ratio extraction ÷ bare loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from pathlib import Path

import openai

from clado.agents.facets import SCHEMAS, record_excerpt
from clado.backends.embed import make_embedder
from clado.backends.llm_runtime import llm_client
from clado.config import Config
from clado.pipeline.build import build_async, choose_facets
from clado.pipeline.ingest import ingest
from clado.prompts import render
from clado.prompts.quoting import neutralise_tags
from clado.taxonomy.store import Store


async def bare_loop(
    base_url: str, model: str, api_key: str, prompts: list[tuple[str, dict]], concurrency: int
) -> float:
    """Send every prompt once with a plain client at the same concurrency; return the wall time."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=300)
    semaphore = asyncio.Semaphore(concurrency)
    system = render("system")

    async def one(prompt: str, response_format: dict) -> None:
        async with semaphore:
            await client.chat.completions.create(
                model=model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                response_format=response_format, temperature=0, seed=0, max_tokens=512,
            )  # fmt: skip

    start = time.perf_counter()
    await asyncio.gather(*(one(p, rf) for p, rf in prompts))
    seconds = time.perf_counter() - start
    await client.close()
    return seconds


async def run(args: argparse.Namespace) -> dict:
    config = Config.load(args.config)
    if args.local_model:
        config.llm.local_model = args.local_model
    records = ingest([Path(p) for p in args.inputs], settings=config.ingest).records[: args.limit]
    embedder = make_embedder(config.embed)
    with tempfile.TemporaryDirectory(prefix="clado-bench-") as scratch:
        out = Path(scratch)
        with Store(out / "clado.db") as store:
            async with llm_client(config.llm, seed=config.seed, store=store) as llm:
                result = await build_async(
                    [], out=out, config=config, store=store, embedder=embedder, llm=llm, records=records
                )
                max_chars = max(500, (config.llm.n_ctx - config.llm.max_tokens - 400) * 3)
                prompts = []
                for spec in choose_facets(config, records):
                    schema = SCHEMAS[spec.schema_name]
                    response_format = llm._response_format(llm.dialect or "json_object", schema)
                    for record in records:
                        text, _ = record_excerpt(record, max_chars)
                        prompt = render(
                            spec.prompt, text=neutralise_tags(text), question=spec.question, prefill=spec.prefill
                        )
                        prompts.append(
                            (prompt + "\n", response_format)
                        )  # a trailing newline defeats server-side prompt caches of the build
                bare = await bare_loop(
                    llm.settings.base_url, llm.model, llm.settings.api_key, prompts, llm.settings.max_concurrency
                )
    seconds = result.summary["seconds"]
    return {
        "inputs": args.inputs,
        "records": len(records),
        "items": result.summary["items"],
        "clusters": result.summary["clusters"],
        "models": result.taxonomy.fingerprint,
        "seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "llm": result.summary["llm"],
        "bare_loop": {
            "requests": len(prompts),
            "seconds": round(bare, 3),
            "requests_per_s": round(len(prompts) / bare, 3),
        },
        "extract_over_bare": round(seconds["extract"] / bare, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--config")
    parser.add_argument("--local-model", help="embedded model when the config names no server: default, small, tiny")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N records")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/bench_build.json"))
    args = parser.parse_args()
    report = asyncio.run(run(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
