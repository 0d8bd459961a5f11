"""Frontier statistics (benchmarks/frontier_stats.py): frontiers, intervals, choices, verdicts."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import frontier_stats as S  # noqa: E402


def test_efficient_points_drop_the_dominated() -> None:
    pts = [(10.0, 0.99), (12.0, 0.98), (11.0, 0.995), (15.0, 0.9995), (15.0, 0.999)]
    assert S.efficient(pts) == [(10.0, 0.99), (11.0, 0.995), (15.0, 0.9995)]


def test_gpu_hours_at_the_goal_interpolates_in_nines() -> None:
    # 99 % at 10 GPU-h, 99.99 % at 20: 99.9 % is two nines of three, halfway in nines.
    at = S.gpu_hours_at([(10.0, 0.99), (20.0, 0.9999)], 0.999)
    assert at.bound == "exact" and at.gpu_hours == pytest.approx(15.0)
    above = S.gpu_hours_at([(10.0, 0.9995), (20.0, 0.9999)], 0.999)
    assert above.bound == "upper" and above.gpu_hours == 10.0
    below = S.gpu_hours_at([(10.0, 0.99), (20.0, 0.998)], 0.999)
    assert below.bound == "below" and below.gpu_hours is None and below.max_attainment == 0.998
    # a dominated point does not bend the frontier
    assert S.gpu_hours_at([(10.0, 0.99), (12.0, 0.95), (20.0, 0.9999)], 0.999).gpu_hours == pytest.approx(15.0)


def test_t_interval() -> None:
    from scipy import stats  # type: ignore[import-untyped]

    xs = [1.0, 2.0, 3.0, 4.0, 5.0]
    ti = S.t_interval(xs)
    half = stats.t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5)
    assert ti["mean"] == 3.0 and ti["n"] == 5
    assert ti["lo"] == pytest.approx(3.0 - half) and ti["hi"] == pytest.approx(3.0 + half)
    assert S.t_interval([7.0]) == {"mean": 7.0, "lo": 7.0, "hi": 7.0, "n": 1}
    assert S.t_interval([0.999, 1.0], clip=(0.0, 1.0))["hi"] == 1.0


def rows(gpu: dict[float, float], att: dict[float, float], seeds: tuple[int, ...] = (0, 1, 2),
         jitter: float = 0.01) -> list[dict[str, Any]]:
    return [{"u": u, "seed": s, "gpu_hours": gpu[u] * (1 + jitter * s), "attainment": att[u]}
            for u in gpu for s in seeds]


def frontiers(g_scale: float = 1.0, g_att: float = 0.9999) -> dict[str, Any]:
    us = (0.6, 0.8)
    base_att = {0.6: 0.9995, 0.8: 0.998}
    return {
        "hpa": S.frontier_summary(rows({0.6: 100.0, 0.8: 80.0}, base_att)),
        "keda": S.frontier_summary(rows({0.6: 110.0, 0.8: 90.0}, base_att)),
        "knative-kpa": S.frontier_summary(rows({0.6: 150.0, 0.8: 120.0}, {0.6: 0.998, 0.8: 0.99})),
        "gpufleet": S.frontier_summary(rows({u: g * g_scale for u, g in zip(us, (90.0, 60.0))},
                                            {0.6: g_att, 0.8: 0.998})),
    }


LB = {"0": 50.0, "1": 50.5, "2": 51.0}


@given(st.lists(st.floats(min_value=0.0, max_value=1e4, allow_nan=False), min_size=2, max_size=6), st.randoms())
def test_t_interval_does_not_depend_on_the_order_of_the_runs(xs: list[float], rnd: Any) -> None:
    """A resumed suite stores runs in the order they finished; results.json must not follow it."""
    shuffled = list(xs)
    rnd.shuffle(shuffled)
    assert S.t_interval(shuffled) == S.t_interval(xs)


def test_verdict_is_computed_from_the_data() -> None:
    fr = frontiers()
    v = S.verdict(fr, LB, ratio_goal=0.8)
    assert v["best_baseline"] == "hpa"
    assert v["baselines_below_goal"] == ["knative-kpa"]
    r = v["vs_baseline"]["ratio"]
    assert r is not None and r["n"] == 3 and r["mean"] < 0.8
    assert v["vs_baseline"]["status"] == "met"
    # The same frontiers with gpufleet's GPU-hours 1.5x: not met, by the data.
    worse = S.verdict(frontiers(g_scale=1.5), LB, ratio_goal=0.8)
    assert worse["vs_baseline"]["status"] == "not_met" and worse["vs_baseline"]["reasons"] == ["ratio_above_goal"]
    assert worse["vs_baseline"]["ratio"]["mean"] == pytest.approx(1.5 * r["mean"])
    # gpufleet below the goal at every knob value
    low = S.verdict(frontiers(g_att=0.9985), LB, ratio_goal=0.8)
    assert low["vs_baseline"]["status"] == "not_met" and "gpufleet_below_goal" in low["vs_baseline"]["reasons"]
    assert low["vs_lower_bound"]["status"] == "not_met"
    # every policy against the lower bound: paired by seed
    lbr = v["policies_vs_lower_bound"]["hpa"]
    assert lbr is not None and lbr["n"] == 3 and lbr["mean"] > 1.0
    assert v["policies_vs_lower_bound"]["knative-kpa"] is None


def test_a_baseline_above_the_goal_everywhere_leaves_a_low_ratio_undetermined() -> None:
    fr = frontiers()
    fr["hpa"] = S.frontier_summary(rows({0.6: 200.0, 0.8: 150.0}, {0.6: 0.99999, 0.8: 0.9999}))
    fr["keda"] = copy.deepcopy(fr["hpa"])
    v = S.verdict(fr, LB, ratio_goal=0.8)
    assert v["vs_baseline"]["status"] == "undetermined"
    assert v["vs_baseline"]["reasons"] == ["baseline_above_goal_at_every_knob"]


def test_no_baseline_reaching_the_goal_is_undetermined() -> None:
    fr = frontiers()
    for p in ("hpa", "keda"):
        fr[p] = fr["knative-kpa"]
    v = S.verdict(fr, LB, ratio_goal=0.8)
    assert v["best_baseline"] is None
    assert v["vs_baseline"]["status"] == "undetermined"
    assert S.overall([v, S.verdict(frontiers(), LB, ratio_goal=0.8)], "vs_baseline") == "undetermined"
    assert S.overall([S.verdict(frontiers(g_scale=2), LB, ratio_goal=0.8), v], "vs_baseline") == "not_met"


def test_tuning_choices() -> None:
    reach = {"t1": S.frontier_summary(rows({0.6: 100.0, 0.8: 80.0}, {0.6: 0.9995, 0.8: 0.998})),
             "t2": S.frontier_summary(rows({0.6: 90.0, 0.8: 70.0}, {0.6: 0.9999, 0.8: 0.9992}))}
    dearer = {t: S.frontier_summary(rows({0.6: 130.0, 0.8: 100.0}, {0.6: 0.9995, 0.8: 0.998})) for t in ("t1", "t2")}
    short = {t: S.frontier_summary(rows({0.6: 60.0, 0.8: 50.0}, {0.6: 0.998, 0.8: 0.99})) for t in ("t1", "t2")}
    ch = S.choose_secondary({'{"pool":0}': reach, '{"pool":2}': dearer, '{"pool":4}': short})
    assert ch["chosen"] == '{"pool":0}'
    assert ch["scores"]['{"pool":4}']["traces_reaching_goal"] == 0
    # the default target: the highest reaching the goal on every tuning trace
    assert S.default_u(reach) == {"u": 0.6, "reaches_goal": True}
    assert S.default_u(short) == {"u": 0.6, "reaches_goal": False}


def test_at_common_compares_where_the_goal_is_out_of_reach() -> None:
    fr = {
        "hpa": S.frontier_summary(rows({0.4: 100.0, 0.8: 70.0}, {0.4: 0.998, 0.8: 0.99})),
        "keda": S.frontier_summary(rows({0.4: 120.0, 0.8: 90.0}, {0.4: 0.9985, 0.8: 0.99})),
        "gpufleet": S.frontier_summary(rows({0.4: 80.0, 0.8: 60.0}, {0.4: 0.9983, 0.8: 0.995})),
    }
    v = S.verdict(fr, LB, ratio_goal=0.8)
    assert v["vs_baseline"]["status"] == "not_met"  # nobody reaches 99.9 %
    c = v["at_common"]
    assert c is not None and c["attainment"] == pytest.approx(0.998)  # the lowest top over policies and seeds
    assert c["best_baseline"] == "hpa"
    # hpa reaches 99.8 % only at its top point (100 GPU-h); gpufleet between its two points
    assert c["gpu_hours"]["hpa"]["mean"] == pytest.approx(100.0 * (1 + 0.01))
    assert 0.6 < c["ratio"]["mean"] < 0.8
