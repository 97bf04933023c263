"""benchmarks/bench_build.py against the real server: every documented field, with figures that add up."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parent.parent
STAGES = {"ingest", "extract", "embed", "cluster", "refine", "keywords", "name", "hierarchy", "calibrate", "export"}


def test_bench_build_reports_stages_llm_use_and_the_bare_loop(llm_server, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[llm]\nbase_url = "{llm_server.base_url}"\nmodel = "{llm_server.model_name}"\n'
        "[facets]\nmax_failed_share = 0.5\n"  # 1 of 4 records failing on the 0.5B model must not stop it
    )
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "bench_build.py"), str(ROOT / "examples" / "reviews.jsonl"),
        "--config", str(config), "--limit", "4", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "CLADO_QUIET": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["records"] == 4 and report["items"] >= 4
    assert set(report["seconds"]) == STAGES and all(s >= 0 for s in report["seconds"].values())
    assert report["seconds"]["extract"] > 0 and report["peak_rss_mb"] > 0
    # One extraction call per record at least, all of them sent to the server (a fresh store has no cache).
    assert report["llm"]["calls"] >= 4 and report["llm"]["cache_hits"] == 0
    assert report["llm"]["prompt_tokens"] > 0 and report["llm"]["completion_tokens"] > 0
    bare = report["bare_loop"]
    assert bare["requests"] == 4 and bare["seconds"] > 0
    assert report["extract_over_bare"] == pytest.approx(report["seconds"]["extract"] / bare["seconds"], rel=0.01)
