"""User text made safe for a prompt: it can neither close the prompt's `<data>` block nor write a chat control token.

`neutralise_tags` keeps the text as it is otherwise (facet prompts quote whole records, the reranker whole
texts); `quote_data` also collapses whitespace and cuts to a budget (names, examples).
"""

from __future__ import annotations

import re

BLOCK_TAG = re.compile(r"<\s*(/?)\s*(data|think)\s*>", re.IGNORECASE)
# <|im_start|>, <|im_end|>, <|endoftext|>, <|eot_id|>…: servers parse them as special tokens in the prompt text.
CONTROL_TOKEN = re.compile(r"<\|([^<>|]{1,64})\|>")


def neutralise_tags(text: str) -> str:
    """`text` with `<data>`/`</data>`/`<think>`/`</think>` (any case or spacing) and `<|…|>` control tokens
    defused: their angle brackets become ‹ ›, e.g. ‹/data›, ‹|im_end|›."""
    text = BLOCK_TAG.sub(lambda m: f"‹{m.group(1)}{m.group(2).lower()}›", text)
    return CONTROL_TOKEN.sub(lambda m: f"‹|{m.group(1)}|›", text)


def quote_data(text: str, max_chars: int | None = None) -> str:
    """`text` for a `<data>` block: tags neutralised, whitespace collapsed, cut to `max_chars`."""
    text = " ".join(neutralise_tags(text).split())
    if max_chars is not None and len(text) > max_chars:
        text = text[: max(max_chars - 1, 0)].rstrip() + "…"
    return text
