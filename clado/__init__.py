"""clado: a Clio-style taxonomy builder.

The Python API mirrors the `clado` command line; each function runs what its command runs:

- build(inputs, out=...)           `clado build`: a taxonomy from input files into an output directory
- refresh(inputs, store=...)       `clado refresh`: new records into a built store (or rebuild=True)
- classify(texts, store=...)       what `clado serve` answers on POST /v1/classify: route texts to leaves
- evaluate(dataset, labels=...)    `clado eval`: build on a labelled set and score it against baselines
- load(store=...)                  the stored taxonomy (latest or a given version)

Every `config` is a clado.config.Config, a path to a TOML file (see `clado config`), or None for the
defaults (for refresh and classify: the config recorded with the store). Nothing heavy is imported until
one of these functions is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from clado.version import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence

    from clado.config import Config
    from clado.pipeline.build import BuildResult
    from clado.pipeline.classify import Classification
    from clado.pipeline.refresh import RefreshResult
    from clado.taxonomy.records import Taxonomy
    from clado.taxonomy.store import Store

__all__ = ["__version__", "build", "classify", "evaluate", "load", "refresh"]

PathLike = Path | str


def _opened(store: PathLike) -> Store:
    """The store of a build's output directory; FileNotFoundError when it holds none."""
    from clado.taxonomy.store import Store

    db = Path(store) / "clado.db"
    if not db.is_file():
        raise FileNotFoundError(f"{db} not found: `store` must be the output directory of a build")
    return Store(db)


def _config(config: Config | PathLike | None) -> Config | None:
    """A Config as given, or read from a TOML path; None stays None (the caller's default)."""
    if config is None:
        return None
    from clado.config import Config

    return config if isinstance(config, Config) else Config.load(config)


def build(
    inputs: Sequence[PathLike] | PathLike,
    *,
    out: PathLike = "out",
    config: Config | PathLike | None = None,
    no_llm: bool = False,
    retry_failed: bool = False,
    wait: float = 0.0,
) -> BuildResult:
    """Build a taxonomy from JSONL, CSV or text files into `out`, as `clado build` does.

    Writes clado.db, taxonomy.html/.json, report.md, assignments.csv (and map.png) into `out`; returns the
    taxonomy, the items, their vectors, the paths written and the run summary. `no_llm` clusters the raw texts
    and names clusters by keywords; `wait` is how long to wait for another writer of the same store.

    Example:
        >>> result = clado.build("examples/reviews.jsonl", out="out/reviews", no_llm=True)
        >>> [n.name for n in result.taxonomy.roots()]
    """
    from clado.pipeline.build import build as run_build

    return run_build(inputs, out=out, config=_config(config), no_llm=no_llm, retry_failed=retry_failed, wait=wait)


def refresh(
    inputs: Sequence[PathLike],
    *,
    store: PathLike = "out",
    config: Config | PathLike | None = None,
    rebuild: bool = False,
    wait: float = 0.0,
) -> RefreshResult:
    """Add the new records of `inputs` to the taxonomy in `store` (a build's `out`), as `clado refresh` does.

    Only records not seen before cost LLM calls; node ids are kept; a new version, the exports and
    diff.md/diff.json are written. `rebuild` re-clusters every stored record, carrying ids over by overlap.
    `config` defaults to the one recorded with the store. Returns the taxonomy, the diff and the summary.

    Example:
        >>> result = clado.refresh(["new_reviews.jsonl"], store="out/reviews")
        >>> result.summary["records_new"], result.diff.counts()
    """
    from clado.pipeline.refresh import refresh as run_refresh

    return run_refresh(list(inputs), store_dir=store, config=_config(config), rebuild=rebuild, wait=wait)


def classify(
    texts: Sequence[str], *, store: PathLike = "out", config: Config | PathLike | None = None
) -> list[Classification]:
    """Route each text to its most probable leaf of the latest taxonomy in `store`, as `clado serve` answers
    POST /v1/classify and `clado classify` writes: the path from the top node to the leaf, the calibrated
    probability, the cosine, whether no topic fits (`is_new`) and the next most probable leaves.

    Example:
        >>> [hit] = clado.classify(["the battery dies by noon"], store="out/reviews")
        >>> [step.name for step in hit.path], hit.probability, hit.is_new
    """
    from clado.pipeline.classify import stored_index
    from clado.pipeline.refresh import stored_config

    with _opened(store) as opened:  # set up as `clado serve` sets up its index
        index = stored_index(opened, _config(config) or stored_config(opened))
    return index.classify(list(texts))


def evaluate(
    dataset: PathLike,
    *,
    labels: str,
    parent_field: str | None = None,
    text_field: str = "text",
    messages_field: str | None = None,
    split: str | None = None,
    sample: int | None = None,
    seed: int = 0,
    no_llm: bool = False,
    config: Config | PathLike | None = None,
    out: PathLike | None = None,
) -> dict[str, Any]:
    """Build on a labelled JSONL set without showing the build its labels and score the result, as `clado eval`
    does: NMI, ARI, ACC and purity of the leaves (and of the top level with `parent_field`), next to baselines
    on the same vectors. Returns the report (the layout of `clado eval --json`); `out` keeps the build's outputs.

    Example:
        >>> report = clado.evaluate("banking77.jsonl", labels="label", split="test", no_llm=True)
        >>> report["leaf"]["nmi"], report["baselines"]["kmeans_true_k"]["nmi"]
    """
    from clado.config import Config
    from clado.eval.evaluate import evaluate as run_evaluate

    cfg = (_config(config) or Config()).with_overrides(seed=seed)
    return run_evaluate(
        Path(dataset), labels=labels, parent_field=parent_field, text_field=text_field, messages_field=messages_field,
        split=split, sample=sample, seed=seed, no_llm=no_llm, config=cfg, out=Path(out) if out is not None else None,
    )  # fmt: skip


def load(store: PathLike = "out", *, version: int | None = None) -> Taxonomy:
    """The taxonomy stored in `store` (a build's `out`): the latest version, or `version`.

    Example:
        >>> taxonomy = clado.load("out/reviews")
        >>> for node in taxonomy.roots(): print(node.name, node.size)
    """
    with _opened(store) as opened:
        taxonomy = opened.taxonomy(version)
    if taxonomy is None:
        which = "no taxonomy" if version is None else f"no version {version}"
        raise LookupError(f"{opened.path} holds {which}: run `clado build` first or pick one of its versions")
    return taxonomy
