"""MetricsUnavailable is posted once per cause and transition, and again when the cause changes
(issue 17): checked on the chaos suite's Prometheus faults, where a partial scrape whose pods
changed (one pod out, then two, then another one) posted a Warning per change, six in 11 s. The
cause is its kind, not its particulars; the Warning's message still names the pods."""

from __future__ import annotations

from gpufleet.api.timefmt import iso_seconds
from gpufleet.control.service import ServiceLoop, Settings, metrics_causes
from tests.builders import make_spec
from tests.fakes import FakeMetrics, FakeWiring, RecordingKube, pod

NOW = iso_seconds("2026-01-01T00:05:00Z")
PARTIAL = "queue_depth, request_rate: partial scrape: {n} of 4 serving pods not in Prometheus ({pods}) (since {t})"


def test_a_partial_scrape_whose_pods_change_is_one_cause() -> None:
    one = PARTIAL.format(n=1, pods="chat-ondemand-a", t="2026-01-01T00:05:00Z")
    two = PARTIAL.format(n=2, pods="chat-ondemand-a, chat-ondemand-b", t="2026-01-01T00:05:02Z")
    assert metrics_causes(one) == metrics_causes(two)
    down = "in_flight, sampled_at: Prometheus unreachable (connection refused) (since 2026-01-01T00:05:04Z)"
    assert metrics_causes(down) != metrics_causes(one)


def test_the_loop_posts_one_warning_per_cause_and_transition() -> None:
    class Metrics(FakeMetrics):
        note = ""

        def summary(self) -> str:
            return "all signals read" if self.available else self.note

    metrics = Metrics()
    kube = RecordingKube(pods={f"chat-{i}": pod(f"chat-{i}", serving=True) for i in range(4)},
                         deployments={"chat-ondemand": 4})
    loop = ServiceLoop(name="chat", wiring=FakeWiring(kube, metrics_port=metrics), settings=Settings())
    loop.configure(make_spec(replicas={"min": 4, "max": 8}, warmPool={"size": 0, "max": 0},
                             capacity={"spot": {"enabled": False}}, forecast={"enabled": False}), NOW)
    loop.tick({}, 1, now=NOW)
    metrics.available = False
    posted = []
    for i, (n, pods) in enumerate([(1, "chat-0"), (2, "chat-0, chat-1"), (1, "chat-2"), (1, "chat-2")]):
        metrics.note = PARTIAL.format(n=n, pods=pods, t=f"2026-01-01T00:05:{i:02d}Z")
        posted.append([e.reason for e in loop.tick({}, 1, now=NOW + 2 * (i + 1)).events if e.type == "Warning"])
    assert posted == [["MetricsUnavailable"], [], [], []]
    metrics.note = "in_flight, sampled_at: Prometheus unreachable (connection refused) (details in the operator log)"
    assert [e.reason for e in loop.tick({}, 1, now=NOW + 20).events] == ["MetricsUnavailable"]  # another cause
    metrics.available = True
    assert [e.reason for e in loop.tick({}, 1, now=NOW + 22).events] == ["MetricsAvailable"]
