"""The README's example is what a user copies first: the real API server admits every document of
it (server-side dry-run, nothing created)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.support import Cluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def readme_example() -> list[dict[str, Any]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Example\n", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "README's Example section has no yaml block"
    return [d for d in yaml.safe_load_all(block.group(1)) if d]


def test_the_readme_example_is_admitted(cluster: Cluster, namespace: str) -> None:
    docs = readme_example()
    assert {d["kind"] for d in docs} >= {"InferenceService", "GPUQuota"}
    for doc in docs:
        if doc["kind"] == "InferenceService":
            doc["metadata"]["namespace"] = namespace
        proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc), check=False)
        assert proc.returncode == 0, f"{doc['kind']} refused: {proc.stderr}"
