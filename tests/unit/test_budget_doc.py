"""docs/budgets.md: its PrometheusRule parses with promtool, and every gpufleet_* series it names
(rules, PromQL examples, tables) is one the operator exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, exported_names

DOC = (ROOT / "docs" / "budgets.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


def prometheus_rule() -> dict[str, object]:
    rules = [yaml.safe_load(b) for b in blocks("yaml") if "kind: PrometheusRule" in b]
    assert len(rules) == 1
    rule: dict[str, object] = rules[0]
    return rule


def test_every_series_named_is_exported() -> None:
    named = set(re.findall(r"\bgpufleet_[a-z0-9_]+", DOC))
    assert "gpufleet_cost_total" in named and "gpufleet_budget_state" in named
    missing = named - exported_names()
    assert not missing, f"docs/budgets.md names series the operator does not export: {sorted(missing)}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_rules_and_queries_parse(tmp_path: Path) -> None:
    spec = prometheus_rule()["spec"]
    assert isinstance(spec, dict)
    queries = [line.split("#")[0].strip() for b in blocks("promql") for line in b.splitlines() if line.strip()]
    groups = spec["groups"] + [{"name": "examples", "rules": [
        {"record": f"example:q{i}", "expr": q} for i, q in enumerate(queries)]}]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
