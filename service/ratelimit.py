"""Per-key rate limits: a token bucket per API key, in this worker process.

A key may send ``burst`` requests at once, then ``rate`` a second; a request beyond that is
refused with 429 and ``Retry-After`` (whole seconds until the next token), before any work is
done for it. Buckets live in the process, so with N workers a key gets up to N times the rate;
``docs/operations.md`` says how to size it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


class RateLimited(Exception):
    def __init__(self, retry_after: float):
        super().__init__(f"rate limit exceeded for this API key; retry in {retry_after:.1f} s")
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._buckets: dict[int, _Bucket] = {}
        self._lock = threading.Lock()

    def check(self, key_id: int) -> None:
        """Take one token for the key or raise :class:`RateLimited`; no-op when rate is 0."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(key_id, _Bucket(float(self.burst), now))
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens < 1:
                raise RateLimited((1 - bucket.tokens) / self.rate)
            bucket.tokens -= 1
