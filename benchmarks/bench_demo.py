"""Score the demo's taxonomy (a build of examples/reviews.jsonl) against the hand-labelled gold points.

    python benchmarks/bench_demo.py out/reviews --json benchmarks/results/bench_demo.json
    python benchmarks/bench_demo.py out/reviews --judgements my_judgements.json

Prints leaf purity and NMI against the gold issue types (`aspect / issue`) and aspects, the unassigned share, the
largest top node's share, sibling names that differ only by a bracketed suffix, and each leaf's name beside its
majority gold label. With --judgements (a JSON object: leaf name → true when the name fits its majority label,
judged by a person from that table) it adds the share of leaves whose name matches. Targets (issue 20): purity
≥ 0.8, unassigned ≤ 5%, no top node over 25% of items, no bracket-suffixed siblings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clado.eval.gold_points import load_gold_points, score_points
from clado.taxonomy.records import Item, Taxonomy

ROOT = Path(__file__).resolve().parents[1]
GOLD = ROOT / "examples" / "reviews.gold.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the build's output directory (holds taxonomy.json)")
    parser.add_argument("--gold", type=Path, default=GOLD)
    parser.add_argument("--judgements", type=Path, help="JSON: leaf name → whether it matches its majority label")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    body = json.loads((args.out / "taxonomy.json").read_text())
    items = {k: Item.model_validate({"id": k, **v}) for k, v in body.pop("items").items()}
    taxonomy = Taxonomy.model_validate(body)
    report = score_points(taxonomy, items, load_gold_points(args.gold))
    report["fingerprint"] = taxonomy.fingerprint
    if args.judgements:
        judged = json.loads(args.judgements.read_text())
        names = [leaf["name"] for leaf in report["leaf_majorities"]]
        missing = [n for n in names if n not in judged]
        if missing:
            raise SystemExit(f"{args.judgements}: no judgement for {missing[:5]}")
        report["names_matching_majority"] = round(sum(bool(judged[n]) for n in names) / len(names), 4)
    for leaf in report["leaf_majorities"]:
        print(f"{leaf['size']:>4}  {leaf['majority_share']:>5.0%}  {leaf['name'][:50]:<50}  {leaf['majority']}")
    figures = {k: v for k, v in report.items() if k not in ("leaf_majorities", "fingerprint")}
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
