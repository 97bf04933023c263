"""What a build caches in its store beyond the embeddings and LLM answers: the clustering and the finished build.

Both are keyed by their inputs and settings, so a re-run with nothing changed reads the taxonomy it wrote
last time (and leaves the exports alone when they are still the ones it wrote), and a run that changes only
naming or hierarchy settings re-uses the clustering. Any change of records, item texts, embedding model or
clustering settings gives a new key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from clado.taxonomy.records import Record, sha256_text, stable_json
from clado.taxonomy.store import Store
from clado.version import __version__

BUILD_STAGE = "build"
CLUSTER_STAGE = "clustering"


def records_digest(records: list[Record]) -> str:
    """sha256 over the whole records, in order: ids, contents, users, times, sources and repeats."""
    h = hashlib.sha256()
    for r in records:
        h.update(r.model_dump_json().encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


def texts_digest(texts: list[str]) -> str:
    """sha256 over the item texts, in order."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def build_key(records: list[Record], *, config_fingerprint: str, no_llm: bool, retry_failed: bool) -> str:
    """The key of a whole build: its records, every setting and the clado version."""
    body = [records_digest(records), config_fingerprint, no_llm, retry_failed, __version__]
    return f"{BUILD_STAGE}:{sha256_text(stable_json(body))}"


def cluster_key(texts: list[str], *, embed_model: str, settings: dict[str, Any], llm_model: str | None) -> str:
    """The key of a clustering: the item texts, the embedder identity, the clustering and embedding settings and
    the model a reranking judge would ask."""
    body = [texts_digest(texts), embed_model, settings, llm_model, __version__]
    return f"{CLUSTER_STAGE}:{sha256_text(stable_json(body))}"


def file_digest(path: Path) -> str | None:
    """sha256 of a file's bytes, None when it does not exist."""
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def outputs_unchanged(outputs: dict[str, str]) -> bool:
    """Whether every export file still has the digest the build recorded (none deleted or edited since)."""
    return bool(outputs) and all(file_digest(Path(p)) == digest for p, digest in outputs.items())


def output_digests(outputs: dict[str, Path]) -> dict[str, str]:
    """Export path → sha256, recorded with the build."""
    return {str(p): file_digest(p) or "" for p in outputs.values()}


def cached_clustering(store: Store, key: str) -> tuple[np.ndarray, dict[int, int], dict[str, Any]] | None:
    """Refined labels, medoid rows and the stats of a cached clustering."""
    body = store.get_output(key)
    if body is None:
        return None
    medoids = {int(k): int(v) for k, v in body["medoids"].items()}
    return np.asarray(body["labels"], dtype=np.int64), medoids, body["stats"]


def put_clustering(store: Store, key: str, labels: np.ndarray, medoids: dict[int, int], stats: dict) -> None:
    store.put_output(key, CLUSTER_STAGE, {"labels": labels.tolist(), "medoids": medoids, "stats": stats})
