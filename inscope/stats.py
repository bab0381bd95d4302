"""Latency percentiles: the one helper every benchmark and summary uses.

Latency is reported as p50 / p90 / p99 / max, never as a mean alone (a mean hides the
stalls that matter beside a live microscope). Values are nanosecond differences of
``time.monotonic_ns()`` stamps; reports are in milliseconds.
"""

from __future__ import annotations

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
