"""Latency percentiles: the one helper every benchmark and summary uses.

Latency is reported as p50 / p90 / p99 / max, never as a mean alone (a mean hides the
stalls that matter beside a live microscope). Values are nanosecond differences of
``time.monotonic_ns()`` stamps; reports are in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

DEFAULT_QUANTILES: tuple[int, ...] = (50, 90, 99)


def percentiles(values: Iterable[float], quantiles: Sequence[int] = DEFAULT_QUANTILES,
                scale: float = 1.0, ndigits: int = 4) -> dict[str, float | int | None]:
    """Summarise *values* as ``{"n", "p50", "p90", "p99", "max", "mean"}``.

    Parameters
    ----------
    values
        Any iterable of numbers; NaN / None entries are ignored.
    quantiles
        Percentiles to report (keys ``p<q>``).
    scale
        Multiplier applied to every value before summarising (e.g. ``1e-6`` for ns -> ms).
    ndigits
        Rounding of the reported numbers, so JSON reports stay readable.

    Returns
    -------
    dict
        ``n`` is the count of finite values; every statistic is ``None`` when n == 0.
    """
    a = np.asarray([v for v in values if v is not None], dtype=float) * scale
    a = a[np.isfinite(a)]
    out: dict[str, float | int | None] = {"n": int(a.size)}
    if a.size == 0:
        out.update({f"p{q}": None for q in quantiles})
        out.update(max=None, mean=None)
        return out
    for q, v in zip(quantiles, np.percentile(a, quantiles), strict=True):
        out[f"p{q}"] = round(float(v), ndigits)
    out["max"] = round(float(a.max()), ndigits)
    out["mean"] = round(float(a.mean()), ndigits)
    return out


def ns_to_ms(values_ns: Iterable[float], **kw) -> dict[str, float | int | None]:
    """:func:`percentiles` of nanosecond values, reported in milliseconds."""
    return percentiles(values_ns, scale=1e-6, **kw)


def stamp_deltas(stamps: Iterable[Mapping[str, int]], start: str, end: str) -> list[int]:
    """``end - start`` (ns) for every stamp dict that has both keys."""
    return [s[end] - s[start] for s in stamps if start in s and end in s]


def stage_latencies(stamps: Sequence[Mapping[str, int]],
                    stages: Sequence[tuple[str, str, str]]) -> dict[str, dict]:
    """Percentiles (ms) for each ``(label, start_stamp, end_stamp)`` in *stages*."""
    return {label: ns_to_ms(stamp_deltas(stamps, a, b)) for label, a, b in stages}


def format_ms(p: Mapping[str, float | int | None], keys: Sequence[str] = ("p50", "p99")) -> str:
    """Compact ``"p50 1.23 / p99 4.56 ms"`` for progress lines and printed summaries."""
    parts = []
    for k in keys:
        v = p.get(k)
        parts.append(f"{k} {'-' if v is None else f'{v:.2f}'}")
    return " / ".join(parts) + " ms"


class QuantileSketch:
    """Streaming percentiles in bounded memory (a log-bucket histogram, as DDSketch).

    A long run cannot keep every value: 1.1 KB of stamps per frame is ~400 MB a hour at
    100 fps. Values fall into buckets ``[g^k, g^(k+1))`` with ``g = (1 + a) / (1 - a)``,
    so every reported percentile is within a relative error *a* (default 1 %) of a true
    value, whatever the number of values; count, mean and max are exact. Memory is one
    dict entry per occupied bucket: nanosecond latencies from 1 ns to 1 hour need at most
    ~1,300 entries at 1 %.

    Values <= 0 are counted in a zero bucket (reported as 0); NaN/inf/None are ignored.
    """

    __slots__ = ("_bins", "_inv_log_g", "_g", "_zero", "n", "total", "max", "min")

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        if not 0 < relative_accuracy < 0.5:
            raise ValueError(f"relative_accuracy must be in (0, 0.5); got {relative_accuracy}")
        self._g = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._inv_log_g = 1.0 / math.log(self._g)
        self._bins: dict[int, int] = {}
        self._zero = 0
        self.n = 0
        self.total = 0.0
        self.max = -math.inf
        self.min = math.inf

    def add(self, v: float) -> None:
        """Count one value (cheap: one log and one dict update)."""
        if v is None or v != v or v in (math.inf, -math.inf):
            return
        self.n += 1
        self.total += v
        if v > self.max:
            self.max = v
        if v < self.min:
            self.min = v
        if v <= 0:
            self._zero += 1
            return
        k = math.floor(math.log(v) * self._inv_log_g)
        bins = self._bins
        bins[k] = bins.get(k, 0) + 1

    def quantile(self, q: float) -> float | None:
        """The *q*-quantile (0..1), or None when empty."""
        if self.n == 0:
            return None
        rank = q * (self.n - 1)
        seen = self._zero
        if rank < seen:
            return max(min(0.0, self.max), self.min)
        for k in sorted(self._bins):
            seen += self._bins[k]
            if rank < seen:
                # the bucket's midpoint in relative terms: error <= a either way
                v = 2.0 * self._g ** k * self._g / (self._g + 1.0)
                return min(max(v, self.min), self.max)
        return self.max

    def summary(self, quantiles: Sequence[int] = DEFAULT_QUANTILES, scale: float = 1.0,
                ndigits: int = 4) -> dict[str, float | int | None]:
        """The same dict as :func:`percentiles` (``n``, ``p<q>``, ``max``, ``mean``)."""
        out: dict[str, float | int | None] = {"n": self.n}
        if self.n == 0:
            out.update({f"p{q}": None for q in quantiles})
            out.update(max=None, mean=None)
            return out
        for q in quantiles:
            v = self.quantile(q / 100.0)
            out[f"p{q}"] = None if v is None else round(v * scale, ndigits)
        out["max"] = round(self.max * scale, ndigits)
        out["mean"] = round(self.total / self.n * scale, ndigits)
        return out

    def __len__(self) -> int:
        return len(self._bins) + 1


#: A derived series: ``label -> ((sign, start stamp, end stamp), ...)``, the sum of the
#: signed stamp differences, counted only when every stamp is present.
Combos = Mapping[str, Sequence[tuple[int, str, str]]]


class StampStats:
    """Per-stage latency percentiles of every frame of a run, in bounded memory.

    Replaces a list of every frame's stamp dict (which grew ~1.1 KB per frame, forever):
    each frame's stage differences go into one :class:`QuantileSketch` per stage.

    Parameters
    ----------
    stages
        ``(label, start stamp, end stamp)`` triples.
    combos
        Derived series (e.g. "ready->published minus detect").
    """

    def __init__(self, stages: Sequence[tuple[str, str, str]], combos: Combos | None = None,
                 relative_accuracy: float = 0.01) -> None:
        self.stages = tuple(stages)
        self.combos = {k: tuple(v) for k, v in (combos or {}).items()}
        self._sk = {label: QuantileSketch(relative_accuracy)
                    for label in (*(s[0] for s in self.stages), *self.combos)}
        self._extra: dict[str, QuantileSketch] = {}
        self._acc = relative_accuracy
        self.frames = 0
        self.first_ready: int | None = None
        self.last_ready: int | None = None

    def add(self, st: Mapping[str, int]) -> None:
        """Count one frame's stamps (called once per frame, in the control thread)."""
        self.frames += 1
        r = st.get("ready")
        if r is not None:
            if self.first_ready is None:
                self.first_ready = r
            self.last_ready = r
        sk = self._sk
        for label, a, b in self.stages:
            if a in st and b in st:
                sk[label].add(st[b] - st[a])
        for label, parts in self.combos.items():
            tot = 0
            for sign, a, b in parts:
                if a not in st or b not in st:
                    break
                tot += sign * (st[b] - st[a])
            else:
                sk[label].add(tot)

    def add_values(self, values: Mapping[str, float]) -> None:
        """Count free-form values (e.g. a detector's own ``{"infer_ms": 2.1}`` split)."""
        ex = self._extra
        for k, v in values.items():
            s = ex.get(k)
            if s is None:
                if len(ex) >= 64:  # a detector inventing keys must not grow memory
                    continue
                s = ex[k] = QuantileSketch(self._acc)
            s.add(v)

    @property
    def fps(self) -> float:
        """Frames per second from the first to the last frame's ``ready`` stamp."""
        if self.frames < 2 or self.first_ready is None or self.last_ready is None:
            return 0.0
        span = self.last_ready - self.first_ready
        return (self.frames - 1) / (span * 1e-9) if span > 0 else 0.0

    def latencies_ms(self) -> dict[str, dict]:
        """Percentiles (ms) of every stage and combo."""
        return {label: s.summary(scale=1e-6) for label, s in self._sk.items()}

    def values(self, key: str) -> QuantileSketch | None:
        return self._extra.get(key)

    def value_keys(self) -> list[str]:
        return sorted(self._extra)
