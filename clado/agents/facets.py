"""Facet extraction: ask each record the configured questions and turn the answers into clusterable items."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import BaseModel, Field

from clado.backends.embed import clustering_text, field_lines
from clado.backends.llm import LLMClient, gather_calls
from clado.backends.llm_errors import InvalidOutput, LLMFatal, is_transient
from clado.progress import progress_bar
from clado.prompts import render, template_hash
from clado.prompts.quoting import neutralise_tags
from clado.taxonomy.records import FacetSpec, FacetValue, Record, sha256_text, stable_json
from clado.taxonomy.store import Store


class ReviewIssue(BaseModel):
    aspect: str = Field(description="The product aspect, 1-4 words, e.g. 'battery', 'delivery'")
    issue: str = Field(description="What the customer says about it, one short sentence")
    sentiment: Literal["positive", "negative", "neutral"]


class FacetAnswer(BaseModel):
    """An answer schema: `extracted()` gives its (value, clustering text, aspect) triples."""

    def extracted(self) -> list[tuple[dict, str, str | None]]:
        raise NotImplementedError


class ReviewIssues(FacetAnswer):
    items: list[ReviewIssue] = Field(max_length=6)

    def extracted(self) -> list[tuple[dict, str, str | None]]:
        return [(i.model_dump(), clustering_text(aspect=i.aspect, issue=i.issue), i.aspect) for i in self.items]


class RequestAnswer(FacetAnswer):
    request: str = Field(description="What the user asked for, one or two sentences, no personal data or proper nouns")
    task: str = Field(description="The kind of task, 2-6 words")

    def extracted(self) -> list[tuple[dict, str, str | None]]:
        return [(self.model_dump(), field_lines(("Request", self.request), ("Task", self.task)), None)]


class LanguageAnswer(FacetAnswer):
    language: str = Field(description="The main language of the user's messages, in English, e.g. 'English'")

    def extracted(self) -> list[tuple[dict, str, str | None]]:
        return [(self.model_dump(), self.language, None)]


class IntentAnswer(FacetAnswer):
    intent: str = Field(description="What the customer wants, one short sentence without personal data")

    def extracted(self) -> list[tuple[dict, str, str | None]]:
        return [(self.model_dump(), field_lines(("Intent", self.intent)), None)]


SCHEMAS: dict[str, type[FacetAnswer]] = {
    "review_issues": ReviewIssues,
    "request": RequestAnswer,
    "language": LanguageAnswer,
    "intent": IntentAnswer,
}

FACET_SETS: dict[str, list[FacetSpec]] = {
    "reviews": [
        FacetSpec(
            name="issues",
            question="Which product aspects does the review talk about, and what does it say about each?",
            prompt="facet_review_issues",
            schema_name="review_issues",
        )
    ],
    "conversations": [
        FacetSpec(
            name="request",
            question="What did the user ask the assistant for?",
            prompt="facet_request",
            schema_name="request",
            prefill="The user asked for",
        ),
        FacetSpec(
            name="language",
            question="What is the main language of the user's messages?",
            prompt="facet_language",
            schema_name="language",
            cluster_on=False,
        ),
    ],
    "support": [
        FacetSpec(
            name="intent",
            question="What does the customer want to achieve?",
            prompt="facet_intent",
            schema_name="intent",
        )
    ],
}


class ExtractResult(BaseModel):
    values: list[FacetValue]
    errors: dict[str, str] = Field(default_factory=dict, description="record id → why extraction failed")
    transient: set[str] = Field(
        default_factory=set, description="the records of `errors` whose failure was transient (retried by the next run)"
    )
    truncated: int = 0
    reused: int = 0


def facet_key(spec: FacetSpec, llm: LLMClient, max_input_chars: int) -> str:
    """Identifies what produced a stored answer: model, prompt template, facet spec and input budget."""
    return sha256_text(stable_json([llm.model, template_hash(spec.prompt), spec.model_dump(), max_input_chars]))


def answer_key(spec_key: str, record: Record) -> str:
    """The key a stored answer is reused by: what asked (`facet_key`) and what it was asked about (the
    record's content, so a changed text under the same id is asked again)."""
    return sha256_text(stable_json([spec_key, record.content_hash]))


def record_excerpt(record: Record, max_chars: int) -> tuple[str, bool]:
    """The record's text cut to the model's budget (head and tail kept), and whether it was cut."""
    text = record.as_text()
    if len(text) <= max_chars:
        return text, False
    head = max_chars * 2 // 3
    return text[:head] + "\n[…]\n" + text[-(max_chars - head) :], True


async def extract_facets(
    records: list[Record],
    *,
    llm: LLMClient,
    facets: list[FacetSpec],
    store: Store,
    max_input_chars: int,
    events: Counter,
    retry_failed: bool = True,
) -> ExtractResult:
    """Extract every facet of every record; answers already in the store for the same key are reused, and so are
    failures, except transient ones (timeouts, server errors: asked again) and all of them with `retry_failed`.

    A fatal LLM error (a refused key or model, no server, the circuit breaker) stops the extraction at once.
    """
    values: list[FacetValue] = []
    errors: dict[str, str] = {}
    transient: set[str] = set()
    counts: Counter[str] = Counter()
    for spec in facets:
        spec_key = facet_key(spec, llm, max_input_chars)
        stored = store.facets(spec.name)
        retried = store.transient_failures(spec.name)
        todo = []
        for record in records:
            got = stored.get(record.id)
            if (
                got
                and got[0] == answer_key(spec_key, record)
                and (got[1] is not None or not (retry_failed or record.id in retried))
            ):
                counts["reused"] += 1
                if got[1] is not None:
                    values.extend(got[1])
                else:
                    errors[record.id] = got[2] or "unknown error"
            else:
                todo.append(record)
        with progress_bar(f"extract {spec.name}", total=len(todo)) as advance:

            async def one(record: Record, spec: FacetSpec, spec_key: str) -> None:
                text, cut = record_excerpt(record, max_input_chars)
                counts["truncated"] += int(cut)
                prompt = render(spec.prompt, text=neutralise_tags(text), question=spec.question, prefill=spec.prefill)
                schema = SCHEMAS[spec.schema_name]
                result: list[FacetValue] | None
                error: str | None
                try:
                    answer = await llm.structured(prompt, schema, reuse_invalid=False, kind=f"facet_{spec.name}")
                except InvalidOutput as exc:
                    events["facet_invalid"] += 1
                    result, error, retry_next = None, f"invalid answer: {exc}", False
                except LLMFatal:
                    raise
                except Exception as exc:  # failed after retries: transient ones are asked again by the next run
                    events["facet_failed"] += 1
                    result, error, retry_next = None, f"{type(exc).__name__}: {exc}", is_transient(exc)
                else:
                    result, error, retry_next = to_values(spec, record, answer.extracted(), events), None, False
                store.put_facets(
                    record.id, spec.name, answer_key(spec_key, record), result, error, transient=retry_next
                )
                if result is not None:
                    values.extend(result)
                else:
                    errors[record.id] = error or "unknown error"
                    if retry_next:
                        transient.add(record.id)
                advance()

            await gather_calls(one(r, spec, spec_key) for r in todo)
    order = {r.id: i for i, r in enumerate(records)}
    values.sort(key=lambda v: (order.get(v.record_id, 0), v.facet, v.index))
    return ExtractResult(
        values=values, errors=errors, transient=transient, truncated=counts["truncated"], reused=counts["reused"]
    )


def to_values(
    spec: FacetSpec, record: Record, extracted: list[tuple[dict, str, str | None]], events: Counter
) -> list[FacetValue]:
    """FacetValues for one answer; an empty answer falls back to the record's own text so nothing is lost."""
    extracted = [(v, t, a) for v, t, a in extracted if t.strip()]
    if not extracted:
        events["facet_empty"] += 1
        text = record.as_text()[:500]
        extracted = [({"fallback": True}, text, None)]
    return [
        FacetValue(record_id=record.id, facet=spec.name, index=i, value=value, text=text, aspect=aspect)
        for i, (value, text, aspect) in enumerate(extracted)
    ]
