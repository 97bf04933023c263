"""c-TF-IDF keywords and keyword-built names."""

import numpy as np

from clado.pipeline.keywords import ctfidf_keywords, keyword_name

CORPUS = [
    "my card has not arrived yet",
    "when will my new card arrive",
    "the card still has not arrived",
    "how do I reset my password",
    "I forgot my password",
    "password reset link does not work",
    "refund please",
]


def test_distinctive_word_ranks_first_and_noise_is_skipped():
    labels = np.array([0, 0, 0, 1, 1, 1, -1])
    keywords = ctfidf_keywords(CORPUS, labels, top_n=4)
    assert set(keywords) == {0, 1}
    assert keywords[0][0] == "card"
    assert keywords[1][0] == "password"
    assert "password reset" in ctfidf_keywords(CORPUS, labels, top_n=50)[1]  # bigrams are counted
    assert not any("refund" in w for words in keywords.values() for w in words)
    assert all(w not in {"my", "the", "how"} for words in keywords.values() for w in words)


def test_word_shared_by_all_clusters_ranks_below_distinctive_ones():
    texts = ["account card blocked", "account card frozen", "account transfer failed", "account transfer pending"]
    keywords = ctfidf_keywords(texts, np.array([0, 0, 1, 1]), top_n=8)
    assert keywords[0].index("card") < keywords[0].index("account")
    assert keywords[1].index("transfer") < keywords[1].index("account")


def test_facet_line_labels_are_not_keywords():
    """`Request:`/`Task:` prefix every conversation item; with few clusters they would top each list."""
    texts = ["Request: track my parcel\nTask: track order", "Request: where is my parcel\nTask: track order",
             "Request: discount code fails\nTask: apply discount", "Request: promo code invalid\nTask: apply discount"]  # fmt: skip
    keywords = ctfidf_keywords(texts, np.array([0, 0, 1, 1]), top_n=20)
    assert not {"request", "task", "request track", "order request"} & {w for words in keywords.values() for w in words}
    assert keywords[0][0] == "track" and keywords[1][0] == "discount"


def test_keyword_name_joins_phrase_and_skips_repeats():
    assert keyword_name(["password", "reset", "password reset", "reset password", "link"]) == "Password reset, link"
    assert keyword_name(["card", "arrival", "delivery", "time"]) == "Card, arrival, delivery"
    assert keyword_name([]) == "Unnamed cluster"
