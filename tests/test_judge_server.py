"""The yes/no judge against the real llama.cpp server (small model): P(yes) read from real logprobs.

Only structure and determinism are asserted: the 0.5B model's verdicts are too weak to rank pairs reliably.
"""

from __future__ import annotations

import asyncio

import pytest

from clado.agents.judge import LLMJudgeReranker
from clado.backends.llm import LLMClient, LLMSettings

pytestmark = pytest.mark.server

SAME = [
    ("My card payment was declined at the shop.", "The shop refused my card payment."),
    ("How do I reset my password?", "I forgot my password and need to reset it."),
    ("My parcel has not arrived yet.", "The package I ordered still has not been delivered."),
]
DIFFERENT = [
    ("My card payment was declined at the shop.", "What will the weather be like tomorrow?"),
    ("How do I reset my password?", "Play some jazz music in the kitchen."),
    ("My parcel has not arrived yet.", "How many calories are in a banana?"),
]


def judge_for(server) -> LLMJudgeReranker:
    settings = LLMSettings(base_url=server.base_url, model=server.model_name, max_concurrency=2)
    return LLMJudgeReranker(LLMClient(settings))


async def test_real_judge_scores_are_probabilities_and_deterministic(llm_server):
    scores = await judge_for(llm_server).ascore_pairs(SAME + DIFFERENT)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert len({round(s, 4) for s in scores}) > 1  # read from real yes/no logprobs, not the 0.5 fallback
    again = await judge_for(llm_server).ascore_pairs(SAME + DIFFERENT)  # fresh judge, no cache
    # temperature 0, but llama.cpp's prompt-cache reuse moves logprobs slightly (about 0.01 seen)
    assert again == pytest.approx(scores, abs=0.03)
    # No same > different assertion: the 0.5B model barely separates them (seen: same 0.15-0.21,
    # different 0.14-0.18), so such a check would be flaky. The benchmark measures the judge's AUC.


async def test_real_judge_blocking_form_from_a_worker_thread(llm_server):
    judge = judge_for(llm_server)
    blocking = await asyncio.to_thread(judge.score_pairs, SAME[:1])
    assert 0.0 <= blocking[0] <= 1.0 and judge.llm.stats.calls == 1
    assert await judge.ascore_pairs(SAME[:1]) == blocking and judge.llm.stats.calls == 1  # cached
