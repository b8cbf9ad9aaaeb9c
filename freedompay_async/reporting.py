"""
Reports over a batch's outcomes: counts per state, requests and retries, throughput, latency.

```python
from freedompay_async.reporting import SummaryBuilder

builder = SummaryBuilder()
async for outcome in outcomes:
    builder.add(outcome)
print(builder.build(elapsed).to_dict())
```

`SummaryBuilder` keeps memory flat however long the batch; `BatchSummary.from_outcomes` builds the
same report from a list of outcomes already held.
"""

from __future__ import annotations

from freedompay_async._batch import BatchSummary, SummaryBuilder

__all__ = ["BatchSummary", "SummaryBuilder"]
