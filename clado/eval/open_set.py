"""`clado eval --open-set`: how well routing tells new problems from known ones, measured by leaving classes out.

A seeded `known_share` of the gold classes is known: the build sees all but `holdout_share` of their items (gold
labels hidden, as in `evaluate`). The held-back items of known classes and every item of the other classes (plus,
with `ood_split`, a data set's own out-of-scope items such as CLINC150's `oos`) are then routed through the same
path as `/v1/classify` and `clado classify`. Reported: AUROC of 1 − probability for "unseen" against "known" (and of
1 − cosine, the uncalibrated baseline), the detection rate at 5% false alarms (threshold set on the held-back known
items), what the build's calibrated τ gives (false alarms on held-back known items against the build's own
flagged share, detections), routing accuracy of known items (the leaf's majority gold class) and the expected
calibration error of the probability against that correctness.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from clado.backends.embed import make_embedder
from clado.config import Config
from clado.eval.datasets import LabelledSet, load_labelled
from clado.eval.evaluate import build_records
from clado.pipeline.classify import Classification, RoutingIndex
from clado.taxonomy.store import Store

FALSE_ALARM = 0.05
BINS = 10


def split_classes(
    gold: list[str], *, known_share: float, holdout_share: float, seed: int
) -> tuple[list[int], list[int], set[str]]:
    """(build rows, held-back rows, known classes): `holdout_share` of each known class's rows (at least one when
    it has two) and every row of the other classes are held back."""
    classes = sorted(set(gold))
    rng = random.Random(seed)
    rng.shuffle(classes)
    known = set(classes[: max(1, round(known_share * len(classes)))])
    by_class: dict[str, list[int]] = {}
    for row, label in enumerate(gold):
        by_class.setdefault(label, []).append(row)
    build, held = [], []
    for label in sorted(by_class):
        rows = by_class[label]
        if label not in known:
            held += rows
            continue
        rng.shuffle(rows)
        cut = min(len(rows) - 1, max(1, round(holdout_share * len(rows)))) if len(rows) > 1 else 0
        held += rows[:cut]
        build += rows[cut:]
    return sorted(build), sorted(held), known


def detection_at(novelty: np.ndarray, unseen: np.ndarray, *, false_alarm: float) -> float:
    """Share of unseen items whose novelty exceeds the (1 − false_alarm) quantile of the known items'."""
    cut = np.quantile(novelty[~unseen], 1 - false_alarm)
    return float((novelty[unseen] > cut).mean())


def expected_calibration_error(probability: np.ndarray, correct: np.ndarray, *, bins: int = BINS) -> float:
    """Mean |accuracy − mean probability| over equal-width probability bins, weighted by their counts."""
    which = np.minimum((probability * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - probability[inside].mean())
    return float(error)


def leaf_majority(index: RoutingIndex, gold_of: dict[str, str]) -> list[str]:
    """The gold class most members of each leaf carry (records by id, leaf order of `index`)."""
    out = []
    for leaf in index.leaves:
        counts = Counter(gold_of[m.split("#")[0]] for m in leaf.member_ids)
        out.append(min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0])
    return out


def score_routes(
    results: list[Classification], gold: list[str], unseen: np.ndarray, majority: dict[str, str]
) -> dict[str, Any]:
    """The open-set figures of routed held-back items (see the module doc)."""
    probability = np.array([r.probability for r in results])
    cosine = np.array([r.cosine for r in results])
    flagged = np.array([r.is_new for r in results])
    correct = np.array([not u and majority.get(r.path[-1].id) == g for r, g, u in zip(results, gold, unseen)])
    both = unseen.any() and (~unseen).any()
    return {
        "auroc": round(float(roc_auc_score(unseen, 1 - probability)), 4) if both else None,
        "auroc_cosine": round(float(roc_auc_score(unseen, 1 - cosine)), 4) if both else None,
        "detection_at_5pct_false_alarms": round(detection_at(1 - probability, unseen, false_alarm=FALSE_ALARM), 4)
        if both
        else None,
        "at_tau": {
            "false_alarms": round(float(flagged[~unseen].mean()), 4) if (~unseen).any() else None,
            "detection": round(float(flagged[unseen].mean()), 4) if unseen.any() else None,
        },
        "known_routing_accuracy": round(float(correct[~unseen].mean()), 4) if (~unseen).any() else None,
        "ece": round(expected_calibration_error(probability, correct), 4),
        "known": int((~unseen).sum()),
        "unseen": int(unseen.sum()),
    }


def evaluate_open_set(
    dataset: Path,
    *,
    labels: str,
    split: str | None = None,
    ood_split: str | None = None,
    known_share: float = 0.8,
    holdout_share: float = 0.2,
    sample: int | None = None,
    seed: int = 0,
    no_llm: bool = True,
    config: Config | None = None,
) -> dict[str, Any]:
    """Build on the known classes' items and score the routing of the held-back ones; the `--json` layout."""
    config = (config or Config()).model_copy(deep=True)
    config.output.map = False
    if config.facets.set == "auto" and not config.facets.custom:
        config.facets.set = "support"
    start = time.perf_counter()
    data = load_labelled(dataset, labels=labels, split=split, sample=sample, seed=seed)
    ood = load_labelled(dataset, labels=labels, split=ood_split, sample=sample, seed=seed) if ood_split else None
    build_rows, held_rows, known = split_classes(
        data.gold, known_share=known_share, holdout_share=holdout_share, seed=seed
    )
    build_set = LabelledSet(data.name, split, [data.records[i] for i in build_rows], [data.gold[i] for i in build_rows],
                            None)  # fmt: skip
    embedder = make_embedder(config.embed)
    with tempfile.TemporaryDirectory(prefix="clado-openset-") as scratch:
        result = build_records(build_set.records, config=config, embedder=embedder, no_llm=no_llm, out=Path(scratch))
        built = time.perf_counter()
        with Store(Path(scratch) / "clado.db") as store:
            index = RoutingIndex.from_store(
                store, embedder=embedder, query_template="{text}", embed=config.embed, routing=config.routing
            )
        gold_of = {r.id: g for r, g in zip(build_set.records, build_set.gold)}
        majority = dict(zip(index.leaf_ids, leaf_majority(index, gold_of)))
        held = [data.records[i] for i in held_rows]
        held_gold = [data.gold[i] for i in held_rows]
        results = index.classify([r.as_text() for r in held])
        unseen = np.array([g not in known for g in held_gold])
        report: dict[str, Any] = {
            "dataset": data.name,
            "split": split,
            "mode": "no-llm" if no_llm else "full",
            "classes": len(set(data.gold)),
            "known_classes": len(known),
            "build_items": len(build_rows),
            "leaves": len(index.leaves),
            "new_rate": config.routing.new_rate,
            "threshold": round(index.threshold, 4),
            "build_flagged_share": index.calibration.flagged_share,
            "unseen_intents": score_routes(results, held_gold, unseen, majority),
        }
        if ood is not None:
            ood_results = index.classify([r.as_text() for r in ood.records])
            known_results = [r for r, u in zip(results, unseen) if not u]
            known_gold = [g for g, u in zip(held_gold, unseen) if not u]
            flags = np.array([False] * len(known_results) + [True] * len(ood_results))
            report["out_of_scope"] = score_routes(
                known_results + ood_results, known_gold + ood.gold, flags, majority
            ) | {"split": ood_split}
        report["seconds"] = {
            "build": round(built - start, 3),
            "route": round(time.perf_counter() - built, 3),
            **result.summary["seconds"],
        }
    return report


def format_open_set(report: dict[str, Any]) -> str:
    """The open-set figures as a few plain lines (percentages)."""
    lines = [
        f"{report['dataset']} open set ({report['split'] or 'all'}, {report['known_classes']}/{report['classes']} "
        f"classes known, {report['build_items']} build items, {report['leaves']} leaves, "
        f"tau {report['threshold']:.3f}, build items flagged {100 * report['build_flagged_share']:.1f}%)"
    ]
    for name in ("unseen_intents", "out_of_scope"):
        s = report.get(name)
        if s is None:
            continue
        pct = {k: "n/a" if v is None else f"{100 * v:.1f}" for k, v in s.items() if isinstance(v, float) or v is None}
        lines.append(
            f"{name}: AUROC {pct['auroc']} (cosine {pct['auroc_cosine']}), detection at 5% false alarms "
            f"{pct['detection_at_5pct_false_alarms']}, at tau: false alarms {100 * (s['at_tau']['false_alarms'] or 0):.1f}"
            f" detection {100 * (s['at_tau']['detection'] or 0):.1f}, known routed right {pct['known_routing_accuracy']}, "
            f"ECE {pct['ece']} ({s['known']} known, {s['unseen']} unseen)"
        )
    return "\n".join(lines)
