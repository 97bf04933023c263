"""A build's extraction failures: the error report beside the exports, and the share of failed records that
stops the build."""

from __future__ import annotations

import json
from pathlib import Path

from clado.agents.facets import ExtractResult
from clado.taxonomy.records import Record
from clado.taxonomy.staging import staged_files

ERROR_REPORT = "errors.json"


class ExtractionFailed(RuntimeError):
    """More records failed extraction than `facets.max_failed_share` allows."""


def settle_failures(
    extracted: ExtractResult, records: list[Record], *, out: Path, run_id: str, max_share: float
) -> Path | None:
    """Write `out/errors.json` when records failed (remove a stale one when none did) and return its path; raise
    ExtractionFailed, once it is written, when the failed share is above `max_share`."""
    path = out / ERROR_REPORT
    if not extracted.errors:
        path.unlink(missing_ok=True)
        return None
    by_id = {r.id: r for r in records}
    failed, total = len(extracted.errors), len(records)
    report = {
        "run_id": run_id,
        "records": total,
        "failed": failed,
        "transient": len(extracted.transient),
        "max_failed_share": max_share,
        "errors": [
            {
                "record_id": rid,
                "source": f"{by_id[rid].source_file}:{by_id[rid].source_line}" if rid in by_id else None,
                "error": error,
                "transient": rid in extracted.transient,
            }
            for rid, error in extracted.errors.items()
        ],
    }
    with staged_files(out) as staged:
        staged.path(ERROR_REPORT).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    if failed > max_share * total:
        transient = len(extracted.transient)
        again = f"the next build asks the {transient} transient failures again, " if transient else ""
        raise ExtractionFailed(
            f"{failed} of {total} records ({failed / total:.0%}) failed extraction, more than "
            f"facets.max_failed_share = {max_share:g} allows; reasons in {path}; {again}--retry-failed asks all"
        )
    return path
