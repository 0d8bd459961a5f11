"""Second-to-second bursts: the burst model fitted to the per-request traces (Azure LLM 2023 code,
Mooncake) reproduces their index of dispersion and autocorrelation, and seconds drawn with it
reproduce the model's targets at 1, 10 and 60 s, at ServeGen's rates as at any other: every
target is computed from the model or the data, none is typed in."""

from __future__ import annotations

import os

import numpy as np
import pytest

from gpufleet.sim import traces as T

HAVE_TRACES = os.path.isdir(T.SHARED_TRACES)
needs_traces = pytest.mark.skipif(not HAVE_TRACES, reason="../shared/traces not present")

SCALES = (1, 10, 60)
LAGS = np.array([1, 2, 5, 10, 30])
# A bursty model that needs no data: most of the excess in a level held ~5 s, the rest ~70 s.
HANDMADE = T.BurstModel(dispersion=10.0, weight_fast=0.8, phi_fast=0.8, phi_slow=0.986, ca2=1.0, source="test")


def acf_around(counts: np.ndarray, expected: np.ndarray, lags: np.ndarray) -> np.ndarray:
    r = counts[: expected.size] - expected[: counts.size]
    return np.array([float((r[:-k] * r[k:]).sum() / (r * r).sum()) for k in lags])


def assert_reproduces(tr: T.Trace, model: T.BurstModel, rel: float = 0.12, acf_abs: float = 0.04) -> None:
    assert tr.expected is not None
    for s in SCALES:
        assert T.idc_around(tr.counts, tr.expected, s) == pytest.approx(float(model.idc(s)), rel=rel), s
    np.testing.assert_allclose(acf_around(tr.counts, tr.expected, LAGS), model.acf(LAGS), atol=acf_abs)


def test_model_targets_are_consistent() -> None:
    """IDC(T) = IDC(1) (1 + 2 sum_k<T (1 - k/T) acf(k)) holds for any stationary count series:
    the dispersion and autocorrelation targets describe the same process."""
    for m in (HANDMADE, T.POISSON):
        for t in (2, 10, 60):
            k = np.arange(1, t)
            via_acf = float(m.idc(1)) * (1.0 + 2.0 * float(((1.0 - k / t) * m.acf(k)).sum()))
            assert float(m.idc(t)) == pytest.approx(via_acf, rel=1e-9)
    assert np.all(np.diff(HANDMADE.idc(np.array([1, 2, 5, 10, 30, 60]))) > 0)  # correlated: grows
    assert float(T.POISSON.idc(60)) == pytest.approx(1.0)


@pytest.mark.parametrize("rate", [30.0, 120.0, 600.0])
def test_synthetic_seconds_reproduce_the_model_at_any_rate(rate: float) -> None:
    """The dispersion does not depend on the rate (superposed independent clients)."""
    tr = T.from_window_rates("flat", np.full(300, rate), burst=HANDMADE, seed=11)
    assert_reproduces(tr, HANDMADE)


def test_synthetic_seconds_reproduce_the_model_on_a_daily_cycle() -> None:
    day = 200.0 + 150.0 * np.sin(np.linspace(0, 2 * np.pi, 144, endpoint=False))
    tr = T.from_window_rates("cycle", np.tile(day, 2), burst=HANDMADE, seed=12)
    assert_reproduces(tr, HANDMADE)


def test_superposing_copies_keeps_the_dispersion() -> None:
    """The premise of a rate-free dispersion: independent streams superposed burst per request as
    each one does (scale_load superposes shifted copies)."""
    tr = T.from_window_rates("one", np.full(300, 40.0), burst=HANDMADE, seed=14)
    x3 = T.scale_load(tr, 3.0, seed=2)
    assert x3.expected is not None
    for s in SCALES:
        assert T.idc_around(x3.counts, x3.expected, s) == pytest.approx(float(HANDMADE.idc(s)), rel=0.12), s


def test_fit_recovers_a_known_model() -> None:
    """Fitting seconds drawn from a model gives back its dispersion curve (the fit is not circular)."""
    tr = T.from_window_rates("known", np.full(200, 30.0), burst=HANDMADE, seed=13)
    fitted = T.fit_burst(tr)
    scales = np.array([1, 10, 60])
    np.testing.assert_allclose(fitted.idc(scales), HANDMADE.idc(scales), rtol=0.15)
    np.testing.assert_allclose(fitted.idc(np.array(T.IDC_SCALES)), fitted.measured, rtol=0.15)


def test_seeded() -> None:
    a = T.from_window_rates("s", np.full(4, 80.0), burst=HANDMADE, seed=3)
    b = T.from_window_rates("s", np.full(4, 80.0), burst=HANDMADE, seed=3)
    c = T.from_window_rates("s", np.full(4, 80.0), burst=HANDMADE, seed=4)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert not np.array_equal(a.counts, c.counts)


@needs_traces
@pytest.mark.parametrize("name,loader", [("azure", T.load_azure), ("mooncake", T.load_mooncake)])
def test_fitted_model_matches_the_per_request_trace(name: str, loader) -> None:  # type: ignore[no-untyped-def]
    tr = loader()
    model = T.reference_burst(name)
    expected = T.window_expected(tr.counts)
    counts = tr.counts[: expected.size]
    for s in SCALES:  # the measured index of dispersion around the trace's own window rate
        assert float(model.idc(s)) == pytest.approx(T.idc_around(counts, expected, s), rel=0.10), s
    # the autocorrelation was not fitted: it follows from the dispersion curve and matches the data
    np.testing.assert_allclose(model.acf(LAGS), acf_around(counts, expected, LAGS), atol=0.08)
    assert model.ca2 == pytest.approx(float(tr.ca2.mean()))


@needs_traces
def test_servegen_seconds_reproduce_the_fitted_azure_bursts() -> None:
    model = T.reference_burst("azure")
    sg = T.load_trace("servegen:m-small@0.1")
    assert_reproduces(sg, model, rel=0.10)
    # and the per-request trace's own measurement, at ~40x its rate
    az = T.load_azure()
    e = T.window_expected(az.counts)
    for s in SCALES:
        assert T.idc_around(sg.counts, sg.expected, s) == pytest.approx(  # type: ignore[arg-type]
            T.idc_around(az.counts[: e.size], e, s), rel=0.15), s


@needs_traces
def test_servegen_cv_bursts_take_dispersion_from_the_clients() -> None:
    sg = T.load_trace("servegen:m-small@0.1~servegen-cv")
    az = T.reference_burst("azure")
    assert np.all(sg.ca2 == az.ca2)
    assert sg.expected is not None
    # the clients' CVs thinned to 0.1 burst far less than the Azure code service
    assert T.idc_around(sg.counts, sg.expected, 1) < 0.5 * float(az.idc(1))
