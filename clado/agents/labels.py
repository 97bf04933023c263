"""Checks and repairs for names an LLM writes or picks.

- `match_label`: an LLM-chosen label validated against the candidate list (exact after normalising, else a
  rapidfuzz ratio >= 90, as kura's `ClusterLabel`), so an unknown parent is never accepted.
- `clean_name`, `make_unique`, `resolve_clashes`: names cut to a word budget and unique among siblings.
- `distinctive_words`, `keyword_label`: deterministic keyword names for the fallback paths.
- `ask_or_none`: one structured call whose weak-model or transport failures become `None` and an event count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import httpx
import numpy as np
import openai
from pydantic import BaseModel, Field
from rapidfuzz import fuzz

from clado.backends.llm import InvalidOutput, LLMClient, TransientError
from clado.pipeline.keywords import ctfidf_keywords, keyword_name

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)

MATCH_THRESHOLD = 90.0
MAX_TAKEN_SHOWN = 30
EDGE_NOISE = " \t\n\"'`*.,;:-–—•#"
LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
# Failures worth a fallback rather than a crash: bad answers, timeouts, overloaded or confused servers.
# Authentication and not-found errors are configuration mistakes and still raise.
RECOVERABLE = (
    InvalidOutput,
    TransientError,
    openai.APIConnectionError,
    openai.InternalServerError,
    openai.BadRequestError,
    openai.UnprocessableEntityError,
    openai.RateLimitError,
    openai.APIResponseValidationError,
    httpx.TransportError,
    json.JSONDecodeError,
)


class ClusterName(BaseModel):
    """A name and description written by the LLM (or by a keyword fallback)."""

    name: str = Field(description="Short name of the category")
    description: str = Field(description="What the category contains and what sets it apart")


def normalise_label(label: str) -> str:
    """Case-folded, whitespace-collapsed label without list markers or surrounding quotes and punctuation."""
    label = LIST_MARKER.sub("", label)
    return " ".join(label.casefold().split()).strip(EDGE_NOISE)


def match_label(answer: str, candidates: Sequence[str], *, threshold: float = MATCH_THRESHOLD) -> str | None:
    """The candidate `answer` names: exact after normalising, else the best fuzzy ratio >= `threshold`.

    An answer of the form "name: description" is also tried by its part before the colon.
    Returns the candidate as spelled in `candidates`, or None.
    """
    keys = [normalise_label(c) for c in candidates]
    tries = [normalise_label(answer)]
    if ":" in answer:
        tries.append(normalise_label(answer.split(":", 1)[0]))
    for attempt in tries:
        if attempt in keys:
            return candidates[keys.index(attempt)]
    best, best_score = None, -1.0
    for attempt in tries:
        for candidate, key in zip(candidates, keys):
            score = fuzz.ratio(attempt, key)
            if score > best_score:
                best, best_score = candidate, score
    return best if best_score >= threshold else None


def clean_name(name: str, *, max_words: int) -> tuple[str, bool]:
    """Whitespace collapsed, list markers, quotes and final punctuation removed, cut to `max_words`.

    Returns (name, whether it was cut).
    """
    name = LIST_MARKER.sub("", " ".join(name.split())).strip(EDGE_NOISE)
    words = name.split()
    if len(words) <= max_words:
        return name, False
    return " ".join(words[:max_words]).strip(EDGE_NOISE), True


def distinctive_words(groups: Sequence[Sequence[str]], *, k: int = 5) -> list[list[str]]:
    """Top `k` c-TF-IDF words of each group of texts (stop words and facet line labels left out); single words,
    as small groups give noisy phrases."""
    texts = [t for group in groups for t in group]
    labels = np.repeat(np.arange(len(groups)), [len(group) for group in groups])
    keywords = ctfidf_keywords(texts, labels, top_n=k, ngrams=1)
    return [keywords.get(g, []) for g in range(len(groups))]


def keyword_label(words: Sequence[str], *, default: str) -> ClusterName:
    """A deterministic name from keywords (the fallback when no LLM name can be used)."""
    if not words:
        return ClusterName(name=default, description="")
    return ClusterName(name=keyword_name(list(words)), description=f"Items mentioning {', '.join(words)}.")


def clashes(names: Sequence[str]) -> list[int]:
    """Indices whose name (normalised) repeats the name of an earlier index."""
    seen: set[str] = set()
    repeated = []
    for i, name in enumerate(names):
        key = normalise_label(name)
        if key in seen:
            repeated.append(i)
        seen.add(key)
    return repeated


def make_unique(names: Sequence[str], *, hints: Sequence[Sequence[str]]) -> tuple[list[str], int]:
    """Earlier names win; a later repeat is renamed from its own hint words (its distinctive keywords, more of them
    while the shorter name is taken), never given a bracketed suffix; only with no usable hints does it get a number.

    Returns (names, how many were changed).
    """
    out: list[str] = []
    taken: set[str] = set()
    changed = 0
    for name, words in zip(names, hints):
        unique = name
        if normalise_label(name) in taken:
            words = list(dict.fromkeys(w for w in words if w.strip()))
            options = (
                [keyword_name(words, max_terms=k) for k in range(min(2, len(words)), len(words) + 1)] if words else []
            )
            options += [f"{name} {n}" for n in range(2, len(names) + 2)]
            unique = next(o for o in options if normalise_label(o) not in taken)
            changed += 1
        taken.add(normalise_label(unique))
        out.append(unique)
    return out, changed


async def resolve_clashes(
    names: list[ClusterName],
    *,
    reask: Callable[[int, list[str]], Awaitable[ClusterName | None]],
    hints: Sequence[Sequence[str]],
    events: Counter,
    prefix: str,
) -> list[ClusterName]:
    """Make sibling names unique; `names` are ordered by priority (an earlier name keeps its name).

    Each repeat is re-asked once via `reask(index, taken_names)`; names still repeated are then renamed from their
    distinctive keywords (`make_unique`). Counts `{prefix}_clash_reask` and `{prefix}_clash_keyword_name`.
    """
    names = list(names)
    repeated = clashes([n.name for n in names])
    if repeated:
        events[f"{prefix}_clash_reask"] += len(repeated)
        answers = [reask(i, taken_names([n.name for n in names], i)) for i in repeated]
        for i, answer in zip(repeated, await asyncio.gather(*answers)):
            if answer is not None:
                names[i] = answer
    unique, changed = make_unique([n.name for n in names], hints=hints)
    count(events, f"{prefix}_clash_keyword_name", changed)
    return [ClusterName(name=u, description=n.description) for u, n in zip(unique, names)]


def count(events: Counter, key: str, n: int = 1) -> None:
    """Add `n` to `events[key]`, leaving zero counts out."""
    if n:
        events[key] += n


def taken_names(names: Sequence[str], index: int) -> list[str]:
    """The other names, most similar to `names[index]` first, at most `MAX_TAKEN_SHOWN`."""
    others = sorted({n for j, n in enumerate(names) if j != index}, key=lambda n: (-fuzz.ratio(n, names[index]), n))
    return others[:MAX_TAKEN_SHOWN]


async def ask_or_none(
    llm: LLMClient, prompt: str, schema: type[T], *, max_tokens: int, events: Counter, prefix: str
) -> T | None:
    """`llm.structured`, with invalid answers and transport failures counted as `{prefix}_invalid_output` or
    `{prefix}_transport_error` and returned as None."""
    try:
        return await llm.structured(prompt, schema, max_tokens=max_tokens, kind=prefix)
    except InvalidOutput as exc:
        events[f"{prefix}_invalid_output"] += 1
        log.warning("%s: unusable answer (%s)", prefix, exc)
    except RECOVERABLE as exc:
        events[f"{prefix}_transport_error"] += 1
        log.warning("%s: request failed (%s: %s)", prefix, type(exc).__name__, exc)
    return None
