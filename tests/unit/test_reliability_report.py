"""reports/reliability's page is computed from its data: the chaos trials (results.json) and the
spec fuzzer's last counts (fuzz.json, written by `make fuzz`)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.chaos import report
from tests.chaos.harness import Config, Trial, scale_downs_below


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


def test_a_scale_down_below_the_need_is_a_loss_whatever_the_metrics_said(tmp_path: Path) -> None:
    """The decisions of a kube-apiserver trial in the sixth full run: 3 (the need), then 1 with
    MetricsAvailable True (a Prometheus back with a minute's rate window to fill), then 4 and 5."""
    decisions = [(10.0, 3, True), (11.0, 1, True), (13.0, 4, True), (17.0, 5, True), (19.0, 3, True)]
    assert scale_downs_below(decisions, 0.0, 30.0, need=3) == 1  # 5 -> 3 is down, not below
    assert scale_downs_below(decisions, 12.0, 30.0, need=3) == 0  # outside the trial
    assert scale_downs_below(decisions, 0.0, 30.0, need=1) == 0
    below = Trial(fault="kube-apiserver restarted mid-tick", service="prom-down", injected=0.0, cleared=1.0,
                  converged=True, converge_s=2.0, budget_s=4.0, below_need=1)
    report.write(tmp_path, [below], Config(seed=1), command="python -m tests.chaos", duration_s=60, machine="2 cores")
    page = (tmp_path / "README.md").read_text()
    assert "Missed for: kube-apiserver restarted mid-tick." in page
    assert "| kube-apiserver restarted mid-tick | 1 | 1 | 2 | 1 | 0 | 0 | 0 | 1 | 0 |" in page
