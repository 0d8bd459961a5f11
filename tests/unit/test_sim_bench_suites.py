"""benchmarks/sim_bench.py's suites: the spot runs over zones take the policies --policy names
(any variant: the fixed warm pools too), else the suite's default list. Built, not run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import sim_bench as B  # noqa: E402

REGIONS = "aws-02-15-2023/us-west-2a+aws-02-15-2023/us-west-2b,aws-02-15-2023/us-east-1a+aws-02-15-2023/us-east-1c"


def args(policy: str | None) -> argparse.Namespace:
    return argparse.Namespace(trace=None, load=1.0, policy=policy, spot_trace=None, spot_zones=REGIONS,
                              spot_days=14.0, scenarios=None, seed=0, quick=False)


def test_spot_zone_suites_default_to_their_policies() -> None:
    first, second = B.suites(args(None))
    assert first.name == "spot-us-west-2a_v100_1+us-west-2b_v100_1"
    assert first.policies == B.SPOT_ZONE_POLICIES and second.policies == B.SPOT_ZONE_ONLY


def test_spot_zone_suites_take_the_named_variants() -> None:
    named = "gpufleet,gpufleet+pool6,gpufleet-nopool"
    assert [s.policies for s in B.suites(args(named))] == [tuple(named.split(","))] * 2
