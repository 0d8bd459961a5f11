"""The lower bound (sim/lowerbound.py): each second's fewest replicas, zero cold start, summed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gpufleet.sim import traces as T
from gpufleet.sim.capacity import GOAL, capacity_table
from gpufleet.sim.lowerbound import lower_bound, per_second_need
from gpufleet.sim.model import ColdStart, LatencyBook, ReplicaModel
from gpufleet.sim.scenarios import CLAIRVOYANT, make_scenario


def test_need_is_the_fewest_replicas_meeting_the_goal_each_second() -> None:
    tr = T.step_load(15.0, 4.0, 300, 300, seed=3)
    model = ReplicaModel()
    need, capped = per_second_need(tr, model, 1.0)
    assert capped == 0 and need.size == tr.seconds
    book = LatencyBook(model, tr.in_sample, 1.0)
    tab = capacity_table(model, book, float(tr.in_sample.mean()), float(tr.out_sample.mean()), 1.0, int(need.max()) + 2)
    for t in np.random.default_rng(0).choice(tr.seconds, 40, replace=False):
        n = int(need[t])
        if tr.counts[t] == 0:
            assert n == 1  # replicas.min
            continue
        assert tab.cap_tokens[n] >= tr.in_tokens[t] and tab.cap_requests[n] >= tr.counts[t]
        assert n == 1 or tab.cap_tokens[n - 1] < tr.in_tokens[t] or tab.cap_requests[n - 1] < tr.counts[t]


def test_gpu_hours_are_the_sum_over_seconds() -> None:
    tr = T.step_load(10.0, 3.0, 200, 400, seed=1)
    lb = lower_bound(tr, ReplicaModel(), 1.0, gpus_per_replica=2)
    assert lb.gpu_hours == pytest.approx(2 * lb.need.sum() / 3600)
    assert lb.gpu_hours_between(0, 200) + lb.gpu_hours_between(200, 600) == pytest.approx(lb.gpu_hours)
    assert lb.goal == GOAL and lb.peak == int(lb.need.max())


def test_more_load_never_needs_fewer_replicas_and_idle_seconds_keep_the_floor() -> None:
    tr = T.step_load(12.0, 2.0, 300, 300, seed=2)
    counts = tr.counts.copy()
    counts[:50] = 0.0
    quiet = replace(tr, counts=counts, in_tokens=np.where(counts > 0, tr.in_tokens, 0.0))
    loud = replace(tr, counts=tr.counts * 2, in_tokens=tr.in_tokens * 2, out_tokens=tr.out_tokens * 2)
    base, _ = per_second_need(tr, ReplicaModel(), 1.0)
    more, _ = per_second_need(loud, ReplicaModel(), 1.0)
    idle, _ = per_second_need(quiet, ReplicaModel(), 1.0, n_min=2)
    assert np.all(more >= base) and more.sum() > base.sum()
    assert np.all(idle[:50] == 2)


def test_the_bound_is_below_every_simulated_policy_at_the_goal() -> None:
    tr = T.scale_load(T.step_load(8.0, 3.0, 600, 900, seed=2), 1.0)
    sc = make_scenario("lb", tr, cold=ColdStart(fixed_s=60.0), max_replicas=16)
    lb = sc.lower_bound()
    runs = [sc.run_clairvoyant(), sc.run("static-peak"), sc.run("hpa", knobs={"u": 0.55}),
            sc.run("gpufleet", knobs={"u": 0.55})]
    assert runs[0].policy == CLAIRVOYANT
    for r in runs:
        if r.attainment >= GOAL:
            assert lb.gpu_hours <= r.gpu_hours, r.policy
    assert runs[0].attainment >= GOAL  # the clairvoyant policy meets the goal, above the bound


def test_a_multi_second_target_spreads_a_second_over_its_slack() -> None:
    from gpufleet.sim.lowerbound import slack_s, trailing_mean

    assert trailing_mean(np.array([4.0, 0.0, 0.0, 8.0]), 2).tolist() == [4.0, 2.0, 0.0, 4.0]
    assert slack_s(1.0) == 1 and slack_s(4.5) == 4
    tr = T.step_load(30.0, 1.0, 900, 0, seed=5)
    counts = tr.counts.copy()
    counts[::60] *= 6  # a burst each minute
    bursty = replace(tr, counts=counts, in_tokens=tr.in_tokens * counts / np.maximum(tr.counts, 1))
    one, _ = per_second_need(bursty, ReplicaModel(), 1.0)
    four, _ = per_second_need(bursty, ReplicaModel(), 4.0)
    # a 4 s target lets a burst spread over four seconds: fewer replicas in all
    assert four.sum() < one.sum()
