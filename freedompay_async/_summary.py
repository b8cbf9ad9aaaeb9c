"""
Batch summaries: outcomes per state, requests, throughput and latency percentiles.

`SummaryBuilder` condenses outcomes one at a time in memory that does not grow with the batch;
`BatchSummary` is what it builds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import attrs

from freedompay_async._exceptions import ConfigurationError
from freedompay_async.facts import OUTCOME_STATES

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from freedompay_async._models import PayOutcome

__all__ = ["STATES", "BatchSummary", "SummaryBuilder"]

#: Every `PayOutcome.state`, in the order summaries show them.
STATES: Final[tuple[str, ...]] = OUTCOME_STATES


def _percentile_rank(count: int, fraction: float) -> int:
    """Return the 1-based nearest rank of the *fraction* quantile among *count* values."""
    return max(1, math.ceil(fraction * count))


class SummaryBuilder:
    """
    Build a `BatchSummary` one outcome at a time, in memory that does not grow with the batch.

    Latencies (`outcome.elapsed`) go into a logarithmic histogram, the idea of DDSketch: a value
    `x` lands in bucket `ceil(log(x) / log(gamma))` with `gamma = (1 + a) / (1 - a)`, and a
    bucket is read back as `2 * gamma**i / (gamma + 1)`, which is within a relative error `a` of
    every value in it. With `a = 0.5 %` a bucket spans 1 %; latencies from 1 µs to one day need
    about 2,500 buckets however many outcomes are added, and the percentiles reported are within
    0.5 % of the exact nearest-rank values (and clamped to the exact minimum and maximum).
    Latencies under 1 µs are counted as zero. Counts, attempts, minimum, maximum and the mean are
    exact.

    Args:
        relative_accuracy: The bound `a` on the relative error of a reported percentile.

    Raises:
        ConfigurationError: *relative_accuracy* is not between 0 and 0.5 (exclusive).
    """

    #: Latencies below this many seconds are counted in the zero bucket.
    MIN_LATENCY: Final = 1e-6

    def __init__(self, *, relative_accuracy: float = 0.005) -> None:
        if not 0 < relative_accuracy < 0.5:  # noqa: PLR2004 - the histogram needs gamma > 1
            raise ConfigurationError(
                f"relative_accuracy must be between 0 and 0.5, got {relative_accuracy!r}"
            )
        self._gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._log_gamma = math.log(self._gamma)
        self._buckets: dict[int, int] = {}
        self._zeros = 0
        self._by_state = dict.fromkeys(STATES, 0)
        self._total = 0
        self._requests = 0
        self._retries = 0
        self._latency_sum = 0.0
        self._min = math.inf
        self._max = 0.0

    @property
    def total(self) -> int:
        """Outcomes added so far."""
        return self._total

    def add(self, outcome: PayOutcome) -> None:
        """
        Count one outcome.

        Args:
            outcome: The outcome.
        """
        self._total += 1
        state = outcome.state
        self._by_state[state] = self._by_state.get(state, 0) + 1
        attempts = max(outcome.attempts, 0)
        self._requests += attempts
        if attempts > 1:
            self._retries += attempts - 1
        latency = outcome.elapsed if outcome.elapsed > 0 else 0.0
        self._latency_sum += latency
        self._min = min(self._min, latency)
        self._max = max(self._max, latency)
        if latency < self.MIN_LATENCY:
            self._zeros += 1
            return
        index = math.ceil(math.log(latency) / self._log_gamma)
        self._buckets[index] = self._buckets.get(index, 0) + 1

    def _quantile(self, fraction: float) -> float | None:
        if self._total == 0:
            return None
        rank = _percentile_rank(self._total, fraction)
        if rank <= self._zeros:
            return 0.0
        seen = self._zeros
        value = self._max
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                value = 2 * self._gamma**index / (self._gamma + 1)
                break
        return min(max(value, self._min), self._max)

    def build(self, elapsed: float) -> BatchSummary:
        """
        Summarise the outcomes added so far.

        Args:
            elapsed: Wall-clock seconds the batch took (for the throughput).

        Returns:
            The summary.
        """
        total = self._total
        return BatchSummary(
            total=total,
            by_state=dict(self._by_state),
            requests=self._requests,
            retries=self._retries,
            elapsed=elapsed,
            throughput=total / elapsed if elapsed > 0 else 0.0,
            latency_p50=self._quantile(0.50),
            latency_p99=self._quantile(0.99),
            latency_mean=self._latency_sum / total if total else None,
            latency_max=self._max if total else None,
        )


@attrs.frozen(kw_only=True)
class BatchSummary:
    """
    What a batch achieved: outcomes per state, retries, throughput and latency.

    Build one with `BatchSummary.from_outcomes` or, without keeping the outcomes, with
    `SummaryBuilder`.

    Attributes:
        total: Outcomes counted.
        by_state: Outcomes per `PayOutcome.state`; every state is present, zeros included.
        requests: Requests sent over all outcomes (the sum of `outcome.attempts`).
        retries: Requests beyond the first of each item: the sum of `attempts - 1` over outcomes
            that sent more than one (resends, reconcile status reads and polls of pending
            payments); items that sent nothing count zero.
        elapsed: Seconds the batch took.
        throughput: Outcomes per second (`total / elapsed`; 0.0 when *elapsed* is 0).
        latency_p50: Median seconds per item (nearest rank), or None without outcomes.
        latency_p99: 99th percentile seconds per item (nearest rank), or None without outcomes.
        latency_mean: Mean seconds per item, or None without outcomes.
        latency_max: Longest seconds per item, or None without outcomes.

    .. versionadded:: 0.1.0
    """

    total: int
    by_state: Mapping[str, int]
    requests: int
    retries: int
    elapsed: float
    throughput: float
    latency_p50: float | None
    latency_p99: float | None
    latency_mean: float | None
    latency_max: float | None

    @classmethod
    def from_outcomes(cls, outcomes: Iterable[PayOutcome], *, elapsed: float) -> BatchSummary:
        """
        Summarise *outcomes*.

        Args:
            outcomes: The outcomes (any iterable; it is read once and not kept).
            elapsed: Wall-clock seconds the batch took.

        Returns:
            The summary.
        """
        builder = SummaryBuilder()
        for outcome in outcomes:
            builder.add(outcome)
        return builder.build(elapsed)

    @property
    def paid(self) -> int:
        """Outcomes in state `paid`."""
        return self.by_state.get("paid", 0)

    @property
    def all_paid(self) -> bool:
        """Whether every outcome is `paid` (True for an empty batch)."""
        return self.paid == self.total

    def to_dict(self) -> dict[str, Any]:
        """
        Return the summary as a JSON-ready dictionary.

        Returns:
            Every attribute by name, `by_state` as a plain dictionary.
        """
        data = attrs.asdict(self)
        data["by_state"] = dict(self.by_state)
        return data
