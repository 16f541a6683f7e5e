"""Latency distributions the report reads: every value (exact), or log-spaced bins whose memory
does not grow with the trace (a simulated day of millions of requests).

`LatencyHistogram` splits [1 ms, 10^6 s] into 10,371 bins, each one's upper edge 1.002 times
its lower edge (values outside go to the end bins), and keeps the exact count, minimum and
maximum. A percentile is the bin of the nearest-rank one, reported as the bin's geometric
centre clamped to [minimum, maximum], so it is within 0.1% (sqrt(1.002) - 1) of the exact
nearest-rank percentile when that lies in [1 ms, 10^6 s]; the minimum and maximum (p0, p100)
are exact. SLO attainment counts whole bins, the SLO's own bin as met: only latencies less
than 0.2% above the SLO can be counted on the wrong side.
"""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate

RATIO = 1.002  # each bin's upper edge over its lower edge
FLOOR = 1e-3  # seconds: the first bin's lower edge
CEILING = 1e6  # seconds: the last bin's upper edge
BINS = math.ceil(math.log(CEILING / FLOOR) / math.log(RATIO))
RELATIVE_ERROR = math.sqrt(RATIO) - 1  # of a histogram percentile, against the exact one
_SCALE = 1 / math.log(RATIO)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted `values` (q in 0..100)."""
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[rank - 1]


class ExactLatencies:
    """Every latency, sorted: exact answers for runs small enough to keep them."""

    def __init__(self, values: Iterable[float]) -> None:
        self.values = sorted(values)

    @property
    def count(self) -> int:
        return len(self.values)

    def percentile(self, q: float) -> float:
        return percentile(self.values, q)

    def within(self, seconds: float) -> float:
        """The share of latencies at most `seconds`."""
        return bisect_right(self.values, seconds) / len(self.values)

    def cdf(self) -> tuple[list[float], list[float]]:
        """(latency, share of requests at most that latency) points for a plot."""
        return self.values, [(i + 1) / len(self.values) for i in range(len(self.values))]


def _bin(seconds: float) -> int:
    return min(BINS - 1, int(math.log(seconds / FLOOR) * _SCALE)) if seconds > FLOOR else 0


class LatencyHistogram:
    """Latencies in log-spaced bins (see the module's docstring for the error bounds)."""

    __slots__ = ("counts", "count", "low", "high")

    def __init__(self) -> None:
        self.counts = [0] * BINS
        self.count = 0
        self.low, self.high = math.inf, -math.inf

    def add(self, seconds: float) -> None:
        self.counts[_bin(seconds)] += 1
        self.count += 1
        if seconds < self.low:
            self.low = seconds
        if seconds > self.high:
            self.high = seconds

    def _value(self, index: int) -> float:
        return min(self.high, max(self.low, FLOOR * RATIO ** (index + 0.5)))

    def percentile(self, q: float) -> float:
        rank = max(1, math.ceil(q / 100 * self.count))
        if rank in (1, self.count):
            return self.low if rank == 1 else self.high
        return self._value(bisect_left(list(accumulate(self.counts)), rank))

    def within(self, seconds: float) -> float:
        if seconds >= self.high:
            return 1.0
        return sum(self.counts[:_bin(seconds) + 1]) / self.count if seconds >= self.low else 0.0

    def cdf(self) -> tuple[list[float], list[float]]:
        seen = [(i, n) for i, n in enumerate(self.counts) if n]
        return [self._value(i) for i, _ in seen], [c / self.count for c in accumulate(n for _, n in seen)]


Latencies = ExactLatencies | LatencyHistogram


def merged(parts: Sequence[Latencies]) -> Latencies:
    """All of `parts` (all exact, or all histograms) as one distribution."""
    if not parts or isinstance(parts[0], ExactLatencies):
        return ExactLatencies(value for part in parts for value in part.values)
    total = LatencyHistogram()
    total.counts = [sum(column) for column in zip(*(part.counts for part in parts))]
    total.count = sum(part.count for part in parts)
    total.low, total.high = min(part.low for part in parts), max(part.high for part in parts)
    return total
