"""reports/reliability's page is computed from its data: the chaos trials (results.json) and the
spec fuzzer's last counts (fuzz.json, written by `make fuzz`)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.chaos import report
from tests.chaos.harness import Config, Trial


def trial(fault: str, dropped: float = 0.0) -> Trial:
    return Trial(fault=fault, service="up", injected=0.0, cleared=1.0, converged=True, converge_s=2.0, budget_s=4.0,
                 dropped=dropped)


def test_the_page_shows_the_trials_and_the_fuzzers_counts(tmp_path: Path) -> None:
    cfg = Config(seed=1)
    report.write(tmp_path, [trial("etcd restarted"), trial("kill -9 operator: up", dropped=0.6)], cfg,
                 command="python -m tests.chaos", duration_s=60, machine="2 cores")
    page = (tmp_path / "README.md").read_text()
    assert "Missed for: kill -9 operator: up." in page  # a drop is a loss, computed, not typed
    assert "No `make fuzz` run recorded" in page

    (tmp_path / "fuzz.json").write_text(json.dumps({
        "command": "make fuzz FUZZ_SPECS=30 FUZZ_SEED=5", "seed": 5, "specs": 30, "elapsed_s": 9, "tried": 30,
        "admitted": 21, "crashed": 0, "outcomes": {"refused at admission": 9, "parsed, sized, two ticks, status admitted": 21}}))
    report.rerender(tmp_path)
    page = (tmp_path / "README.md").read_text()
    assert "**30 specs tried**, 21 admitted" in page and "**0 admitted specs crashed" in page
    assert "| refused at admission | 9 |" in page
    assert "Missed for: kill -9 operator: up." in page  # the trials are read back from results.json
