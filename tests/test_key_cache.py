"""The verified-key cache: entries expire, revocation in this process is immediate."""

from __future__ import annotations

import time

from service.auth import KeyCache, Principal, Role

ANN = Principal(key_id=1, name="ann", role=Role.SCORER)


def test_entries_expire_after_the_ttl() -> None:
    cache = KeyCache(ttl=0.05)
    cache.put("Bearer a", ANN)
    assert cache.get("Bearer a") == ANN
    assert cache.get("Bearer b") is None
    time.sleep(0.08)
    assert cache.get("Bearer a") is None


def test_forget_drops_every_token_of_a_key_and_ttl_zero_caches_nothing() -> None:
    cache = KeyCache(ttl=60)
    cache.put("Bearer a", ANN)
    cache.put("bearer a", ANN)
    cache.forget(ANN.key_id)
    assert cache.get("Bearer a") is None and cache.get("bearer a") is None
    off = KeyCache(ttl=0)
    off.put("Bearer a", ANN)
    assert off.get("Bearer a") is None
