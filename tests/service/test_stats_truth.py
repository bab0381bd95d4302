"""The latency figures every benchmark and summary reports, on values whose percentiles
are known: exact percentiles, the streaming sketch, stamp differences and combos, fps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inscope.stats import (
    QuantileSketch,
    StampStats,
    format_ms,
    ns_to_ms,
    percentiles,
    stage_latencies,
    stamp_deltas,
)

MS = 1_000_000


def test_percentiles_of_1_to_100():
    p = percentiles(range(1, 101))
    assert p == {"n": 100, "p50": 50.5, "p90": 90.1, "p99": 99.01, "max": 100.0, "mean": 50.5}
    q = percentiles([3.0, None, math.nan, 1.0, math.inf, 2.0], quantiles=(25, 75))
    assert q == {"n": 3, "p25": 1.5, "p75": 2.5, "max": 3.0, "mean": 2.0}
    assert percentiles([1.23456789], ndigits=2)["p50"] == 1.23
    assert percentiles([2.0, 4.0], scale=0.5)["max"] == 2.0


def test_no_values_give_none_not_zero():
    for empty in ([], [None, math.nan]):
        assert percentiles(empty) == {"n": 0, "p50": None, "p90": None, "p99": None,
                                      "max": None, "mean": None}


def test_stamp_differences_in_milliseconds():
    stamps = [{"ready": 0, "published": 3 * MS}, {"ready": 10 * MS, "published": 11 * MS},
              {"ready": 20 * MS}, {"published": 5}]
    assert stamp_deltas(stamps, "ready", "published") == [3 * MS, 1 * MS]
    assert ns_to_ms([1 * MS, 2 * MS, 4 * MS])["p50"] == 2.0
    lat = stage_latencies(stamps, [("total", "ready", "published"), ("none", "a", "b")])
    assert lat["total"]["max"] == 3.0 and lat["total"]["n"] == 2 and lat["none"]["n"] == 0
    assert format_ms({"p50": 1.234, "p99": None}) == "p50 1.23 / p99 - ms"
    assert format_ms({"p50": 2.0, "max": 9.876}, ("p50", "max")) == "p50 2.00 / max 9.88 ms"


@pytest.mark.parametrize("accuracy", [0.01, 0.05])
def test_the_sketch_is_within_its_relative_accuracy_and_exact_where_it_says(accuracy):
    rng = np.random.default_rng(5)
    a = rng.lognormal(13, 1.0, 20_000)
    s = QuantileSketch(accuracy)
    for v in a.tolist():
        s.add(v)
    for q in (0.1, 0.5, 0.9, 0.99):
        exact = float(np.quantile(a, q))
        assert abs(s.quantile(q) - exact) <= accuracy * exact * 1.05, q
    assert s.n == a.size and s.max == a.max() and s.min == a.min()
    assert s.total == pytest.approx(a.sum())
    assert s.quantile(1.0) == pytest.approx(a.max(), rel=accuracy)
    assert s.quantile(0.0) == pytest.approx(a.min(), rel=accuracy)


def test_the_sketch_counts_zeros_ignores_non_numbers_and_scales_its_summary():
    s = QuantileSketch()
    assert s.quantile(0.5) is None and s.summary()["p50"] is None and s.summary()["n"] == 0
    for v in (0, 0, 0, 5 * MS, None, math.nan, math.inf, -math.inf):
        s.add(v)
    # nearest rank, no interpolation: of [0, 0, 0, 5 ms] the ranks below 3 are 0
    assert s.n == 4 and s.quantile(0.5) == 0.0 and s.quantile(0.99) == 0.0
    assert s.quantile(1.0) == pytest.approx(5 * MS, rel=0.01)
    summ = s.summary(quantiles=(50, 100), scale=1e-6)
    assert summ["n"] == 4 and summ["p50"] == 0.0 and summ["max"] == 5.0
    assert summ["p100"] == pytest.approx(5.0, rel=0.01) and summ["mean"] == 1.25
    neg = QuantileSketch()
    for v in (-2.0, 3.0):
        neg.add(v)
    assert neg.quantile(0.0) == 0.0 and neg.min == -2.0
    for bad in (0.0, 0.5, -0.1):
        with pytest.raises(ValueError, match="relative_accuracy"):
            QuantileSketch(bad)


def test_stamp_stats_per_stage_combos_values_and_fps():
    ss = StampStats([("detect", "detect_start", "detect_end"),
                     ("total", "ready", "published")],
                    combos={"overhead": ((1, "ready", "published"),
                                         (-1, "detect_start", "detect_end"))})
    for i in range(11):  # 11 frames 10 ms apart: 100 fps
        t = i * 10 * MS
        st = {"ready": t, "detect_start": t + 1 * MS, "detect_end": t + 3 * MS,
              "published": t + 4 * MS}
        if i == 10:
            del st["published"]  # a frame not published: no total, no overhead
        ss.add(st)
    assert ss.frames == 11 and ss.fps == pytest.approx(100.0)
    lat = ss.latencies_ms()
    assert lat["detect"]["n"] == 11 and lat["detect"]["p50"] == pytest.approx(2.0, rel=0.01)
    assert lat["total"]["n"] == 10 and lat["total"]["max"] == 4.0
    assert lat["overhead"]["n"] == 10 and lat["overhead"]["max"] == 2.0
    ss.add_values({"infer_ms": 2.5})
    ss.add_values({"infer_ms": 3.5, "nms_ms": 0.1})
    assert ss.value_keys() == ["infer_ms", "nms_ms"]
    assert ss.values("infer_ms").n == 2 and ss.values("missing") is None
    for k in range(100):  # a detector inventing keys does not grow memory past 64
        ss.add_values({f"k{k}": 1.0})
    assert len(ss.value_keys()) == 64
    one = StampStats([])
    one.add({"ready": 5})
    assert one.fps == 0.0
    same = StampStats([])
    same.add({"ready": 5})
    same.add({"ready": 5})
    assert same.fps == 0.0


def test_rounding_and_options_reach_every_figure():
    p = percentiles([1.23456789, 2.0])
    assert p["max"] == 2.0 and p["p50"] == 1.6173  # 4 digits by default
    assert percentiles([1.23456789])["max"] == 1.2346
    assert ns_to_ms([1_234_567, 2_000_000], ndigits=1, quantiles=(50,)) == {
        "n": 2, "p50": 1.6, "max": 2.0, "mean": 1.6}


def test_small_positive_values_are_not_counted_as_zero_and_the_totals_are_exact():
    s = QuantileSketch()
    assert len(s) == 1  # the zero bucket
    for v in (0.5, 0.25, 1.0, 3.0):
        s.add(v)
    assert s.quantile(0.0) == pytest.approx(0.25, rel=0.01)
    assert s.quantile(0.4) == pytest.approx(0.5, rel=0.01)
    assert s.total == 4.75 and len(s) == 5
    assert QuantileSketch().summary() == {"n": 0, "p50": None, "p90": None, "p99": None,
                                          "max": None, "mean": None}


def test_one_incomplete_combo_does_not_hide_the_next_and_known_keys_keep_counting():
    ss = StampStats([], combos={"a": ((1, "ready", "missing"),),
                                "b": ((1, "ready", "published"),)})
    ss.add({"ready": 0, "published": 2 * MS})
    lat = ss.latencies_ms()
    assert lat["a"]["n"] == 0 and lat["b"]["n"] == 1
    for k in range(64):
        ss.add_values({f"k{k}": 1.0})
    ss.add_values({"new": 1.0, "k0": 2.0})  # full: "new" is dropped, k0 still counted
    assert ss.values("k0").n == 2 and ss.values("new") is None
