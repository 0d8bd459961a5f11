"""Cold starts as stages, the node included (issue 16 item 2): each setting's median Time-to-Ready
from a fresh node, computed from the model by sampling, is about 1, 5 and 10 minutes; a start on a
free node with the image cached skips provisioning, pull and download; the simple lognormal stays
as it was (same draws, so runs with it are unchanged)."""

from __future__ import annotations

import numpy as np
import pytest
from gpufleet.sim.coldstart import COLD_SETTINGS, ColdStart, NodeColdStart, Stage
from gpufleet.sim.model import ColdStart as ModelColdStart

MINUTE = 60.0


@pytest.mark.parametrize(("name", "minutes"), [("warm", 1.0), ("typical", 5.0), ("large", 10.0)])
def test_each_setting_median_from_a_fresh_node_is_about_its_figure(name: str, minutes: float) -> None:
    cold = COLD_SETTINGS[name]
    median = float(np.median(cold.sample_many(np.random.default_rng(7), 40000)))
    assert median == pytest.approx(minutes * MINUTE, rel=0.15)
    # the scalar draws SimFleet makes agree with the vectorised ones
    rng = np.random.default_rng(8)
    scalar = np.median([cold.sample(rng) for _ in range(4000)])
    assert scalar == pytest.approx(median, rel=0.05)


def test_the_settings_are_ordered_and_made_of_their_stages() -> None:
    warm, typical, large = (COLD_SETTINGS[k] for k in ("warm", "typical", "large"))
    assert warm.quantile(0.5) < typical.quantile(0.5) < large.quantile(0.5)
    # warm: no node stage at all; typical adds provisioning and pull; large also downloads weights
    assert warm.provision.median_s == warm.pull.median_s == warm.fetch.median_s == 0
    assert typical.provision.median_s > 0 and typical.pull.median_s > 0 and typical.fetch.median_s == 0
    assert large.fetch.median_s > 0 and large.load.median_s > typical.load.median_s
    for cold in (warm, typical, large):
        stages = cold.stage_medians()
        # the median of the sum is close to the sum of the stage medians (right-skewed: a bit above)
        assert sum(stages.values()) <= cold.quantile(0.5) <= 1.1 * sum(stages.values())


def test_a_start_on_a_free_node_skips_provisioning_pull_and_download() -> None:
    for cold in COLD_SETTINGS.values():
        reuse = cold.quantile(0.5, fresh=False)
        fresh = cold.quantile(0.5)
        node = cold.provision.median_s + cold.pull.median_s + cold.fetch.median_s
        assert fresh - reuse == pytest.approx(node, rel=0.1, abs=2.0)
        assert reuse == pytest.approx(cold.load.median_s + cold.server.median_s + cold.kube.median_s, rel=0.1)


def test_a_stage_draws_its_median_and_p90_and_respects_its_floor() -> None:
    s = Stage(100.0, 160.0, floor_s=70.0)
    x = s.sample_many(np.random.default_rng(1), 50000)
    assert float(np.median(x)) == pytest.approx(100.0, rel=0.02)
    assert float(np.quantile(x, 0.9)) == pytest.approx(160.0, rel=0.03)
    assert x.min() >= 70.0
    fixed = Stage(12.0)
    rng = np.random.default_rng(2)
    state = rng.bit_generator.state
    assert fixed.sample(rng) == 12.0 and Stage().sample(rng) == 0.0
    assert rng.bit_generator.state == state  # a fixed stage draws nothing


def test_fixed_stages_add_up_exactly() -> None:
    cold = NodeColdStart(provision=Stage(100.0), pull=Stage(200.0), fetch=Stage(50.0), load=Stage(10.0),
                         server=Stage(5.0), kube=Stage(1.0))
    rng = np.random.default_rng(0)
    assert cold.node_s(rng) == 350.0 and cold.pod_s(rng) == 16.0 and cold.sample(rng) == 366.0


def test_the_simple_lognormal_is_unchanged_and_has_no_node_part() -> None:
    assert ModelColdStart is ColdStart  # the old import path still works
    assert ColdStart(fixed_s=90.0).sample(np.random.default_rng(0)) == 90.0
    assert ColdStart(fixed_s=90.0).pod_s(np.random.default_rng(0)) == 90.0
    c = ColdStart()
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert c.node_s(a) == 0.0
    assert [c.pod_s(a) for _ in range(5)] == [c.sample(b) for _ in range(5)]  # the same draws as before
    assert c.consolidate_after_s == 0.0
    x = np.array([c.sample(np.random.default_rng(i)) for i in range(4000)])
    assert float(np.median(x)) == pytest.approx(48.0, rel=0.05) and x.min() >= 20.0


def test_a_setting_is_a_cold_start_the_benchmark_config_accepts() -> None:
    from gpufleet.sim.engine import SimConfig

    cfg = SimConfig(cold=COLD_SETTINGS["typical"])
    assert isinstance(cfg.cold, ColdStart) and cfg.cold.consolidate_after_s == 60.0
