"""docs/grafana-dashboard.json: valid JSON, every gpufleet_* series it queries is one the operator
exports (a renamed metric breaks this test, not the users' dashboards), and its PromQL parses
(with promtool, when installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT, exported_names

DASHBOARD: dict[str, Any] = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())


def exprs() -> list[str]:
    out = []
    for panel in DASHBOARD["panels"]:
        out += [t["expr"] for t in panel.get("targets", [])]
    return out


def test_dashboard_shape() -> None:
    assert DASHBOARD["uid"] and DASHBOARD["title"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert {"datasource", "namespace", "service", "team"} <= variables
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_gpufleet_series_is_exported() -> None:
    used = {m for e in exprs() for m in re.findall(r"\bgpufleet_[a-z0-9_]+", e)}
    assert used, "the dashboard should chart the operator's metrics"
    missing = used - exported_names()
    assert not missing, f"dashboard queries series the operator does not export: {sorted(missing)}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promql_parses(tmp_path: Path) -> None:
    # Grafana variables become regexes that match everything; promtool then parses each query.
    rules = [{"record": f"dashboard:q{i}", "expr": re.sub(r"\$\w+", ".*", e)} for i, e in enumerate(exprs())]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
