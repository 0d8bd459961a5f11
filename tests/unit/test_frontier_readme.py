"""The README's benchmark numbers are the report's: the block between the frontier markers in
README.md is exactly what benchmarks/frontier_render.py renders from the committed
reports/bench/results.json, and the report beside it is rendered from the same data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import frontier_render as R  # noqa: E402

RESULTS = ROOT / "reports" / "bench" / "results.json"


def test_the_readme_block_is_rendered_from_the_committed_results() -> None:
    results = json.loads(RESULTS.read_text())
    block = R.readme_block((ROOT / "README.md").read_text())
    assert block is not None, "README.md has no frontier block"
    assert block == R.render_readme_block(results, "reports/bench"), \
        "README.md's numbers drifted from reports/bench/results.json: run benchmarks/frontier_render.py reports/bench --readme README.md"


def test_the_report_is_rendered_from_the_committed_results() -> None:
    results = json.loads(RESULTS.read_text())
    assert (ROOT / "reports" / "bench" / "README.md").read_text() == R.render_report(results)


def test_the_findings_figures_are_rendered_from_the_committed_results() -> None:
    results = json.loads(RESULTS.read_text())
    text = (ROOT / "reports" / "bench" / "FINDINGS.md").read_text()
    block = R.block_in(text, R.F_BEGIN, R.F_END)
    assert block is not None, "FINDINGS.md has no figures block"
    assert block == R.render_findings_block(results)
