"""Every benchmark script imports and parses its arguments (a renamed helper breaks them before any run)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_script_starts(script):
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_benchmark_scripts_are_found():
    assert {"bench_build.py", "bench_refresh.py", "ablation_clustering.py"} <= {p.name for p in SCRIPTS}
