"""A yes/no LLM judge as a `Reranker`: P(yes) that two texts belong to the same topic, read from logprobs.

Works with any OpenAI-compatible chat server that returns top logprobs (the embedded llama.cpp
model, vLLM). `make_reranker` builds the reranker a configuration asks for.
"""

from __future__ import annotations

import asyncio

from clado.backends.llm import LLMClient
from clado.backends.pair_judge import PairJudge
from clado.backends.rerank import (
    Qwen3Reranker,
    Reranker,
    RerankSettings,
    VLLMScoreReranker,
    p_yes_from_top_logprobs,
)
from clado.prompts import render, template_hash
from clado.prompts.quoting import quote_data


class LLMJudgeReranker:
    """Asks the chat model "same topic? yes/no" for each pair and returns P(yes) among yes/no.

    Scores are cached in memory for the run (and by the LLM client in the store). `ascore_pairs`
    is the async form; `score_pairs` is the blocking form for synchronous refinement code, which
    must run in a worker thread (e.g. `asyncio.to_thread`) while the event loop the judge was
    created in keeps running: the LLM calls are sent to that loop.
    """

    def __init__(
        self,
        llm: LLMClient,
        *,
        instruction: str | None = None,
        max_chars: int = 600,
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        self.llm = llm
        self.instruction = instruction
        self.max_chars = max_chars
        self.model_id = f"llm-judge:{llm.model}:{template_hash('judge_same_topic')[:12]}"
        self._loop = loop or _running_loop()
        self._scores: dict[tuple[str | None, str, str], float] = {}

    def prompt(self, first: str, second: str, *, instruction: str | None = None) -> str:
        """The user turn for one pair; texts are cut to `max_chars` and kept inside <data> delimiters."""
        return render(
            "judge_same_topic",
            instruction=instruction if instruction is not None else self.instruction,
            first=quote_data(first, self.max_chars),
            second=quote_data(second, self.max_chars),
        )

    async def ascore_pairs(self, pairs: list[tuple[str, str]], *, instruction: str | None = None) -> list[float]:
        """P(yes) per pair, each distinct pair asked once, concurrently (the client bounds concurrency)."""
        instruction = instruction if instruction is not None else self.instruction
        keys = [(instruction, first, second) for first, second in pairs]
        todo = [key for key in dict.fromkeys(keys) if key not in self._scores]
        system = render("judge_system")
        tops = await asyncio.gather(
            *(self.llm.top_logprobs(self.prompt(a, b, instruction=i), system=system) for i, a, b in todo)
        )
        for key, top in zip(todo, tops, strict=True):
            self._scores[key] = p_yes_from_top_logprobs(top)
        return [self._scores[key] for key in keys]

    def score_pairs(self, pairs: list[tuple[str, str]], *, instruction: str | None = None) -> list[float]:
        """Blocking `ascore_pairs`, for a worker thread while the judge's event loop runs."""
        if _running_loop() is not None:
            raise RuntimeError(
                "LLMJudgeReranker.score_pairs blocks: await ascore_pairs in async code, "
                "or call score_pairs from a worker thread (asyncio.to_thread)"
            )
        if self._loop is None or not self._loop.is_running():
            raise RuntimeError(
                "LLMJudgeReranker.score_pairs needs the event loop its LLM client runs on: create the judge "
                "inside that loop (or pass loop=) and call score_pairs from a worker thread while it runs"
            )
        future = asyncio.run_coroutine_threadsafe(self.ascore_pairs(pairs, instruction=instruction), self._loop)
        return future.result()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def make_reranker(settings: RerankSettings, *, llm: LLMClient | None) -> Reranker | None:
    """The reranker `settings.reranker` names (None for "none"); "llm_judge" uses the build's LLM client."""
    kind = settings.reranker
    if kind == "none":
        return None
    if kind == "llm_judge":
        if llm is None:
            raise ValueError("cluster.rerank.reranker = 'llm_judge' needs the LLM: drop --no-llm or set it to 'none'")
        return LLMJudgeReranker(llm)
    if not settings.reranker_model:
        raise ValueError(f"cluster.rerank.reranker = {kind!r} needs cluster.rerank.reranker_model")
    if kind == "qwen3":
        return Qwen3Reranker(settings.reranker_model)
    if not settings.reranker_url:
        raise ValueError(
            "cluster.rerank.reranker = 'vllm_score' needs cluster.rerank.reranker_url (e.g. http://gpu-box:8000/v1)"
        )
    return VLLMScoreReranker(settings.reranker_url, settings.reranker_model)


def make_judge(settings: RerankSettings, texts: list[str], *, llm: LLMClient | None) -> PairJudge | None:
    """The configured reranker over the items' texts, with the threshold and pair budget of `settings`."""
    reranker = make_reranker(settings, llm=llm)
    if reranker is None:
        return None
    return PairJudge(reranker, texts, threshold=settings.rerank_threshold, budget=settings.rerank_budget)
