"""Server micro-batching: gathered calls, per-request deadlines, errors reach every caller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from model.scorer import Prediction, Scorer
from service.batching import MicroBatcher, ScoringTimeout


class Recording:
    """The real tiny scorer, recording each call's size and optionally slowed down or broken."""

    def __init__(self, scorer: Scorer, delay: float = 0.0, fail: bool = False):
        self.inner, self.delay, self.fail = scorer, delay, fail
        self.name, self.version, self.tasks = scorer.name, scorer.version, scorer.tasks
        self.calls: list[int] = []

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        self.calls.append(len(texts))
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model exploded")
        return self.inner.predict(texts)


def _run(scorer: Recording, coroutine_factory, **limits: float) -> object:  # type: ignore[no-untyped-def]
    async def main() -> object:
        batcher = MicroBatcher(
            scorer,
            max_wait_s=limits.get("wait", 0.05),
            max_batch=int(limits.get("batch", 64)),
            deadline_s=limits.get("deadline", 5.0),
        )
        batcher.start()
        try:
            return await coroutine_factory(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_concurrent_requests_share_model_calls(tiny_scorer: Scorer) -> None:
    scorer = Recording(tiny_scorer, delay=0.01)
    texts = [[f"comment {i} is great"] * (1 + i % 3) for i in range(24)]

    async def many(batcher: MicroBatcher) -> list[list[Prediction]]:
        return await asyncio.gather(*(batcher.predict(t) for t in texts))

    results = _run(scorer, many)
    assert isinstance(results, list)
    assert [len(r) for r in results] == [len(t) for t in texts]
    for request, predictions in zip(texts, results, strict=True):
        assert predictions == tiny_scorer.predict(request)  # each caller gets its own rows
    assert len(scorer.calls) < len(texts) and max(scorer.calls) <= 64
    assert sum(scorer.calls) == sum(len(t) for t in texts)


def test_max_batch_caps_a_call(tiny_scorer: Scorer) -> None:
    scorer = Recording(tiny_scorer)

    async def many(batcher: MicroBatcher) -> list[list[Prediction]]:
        return await asyncio.gather(*(batcher.predict(["hi", "there"]) for _ in range(10)))

    _run(scorer, many, batch=4)
    assert max(scorer.calls) <= 4 and sum(scorer.calls) == 20


def test_a_request_never_waits_past_its_deadline(tiny_scorer: Scorer) -> None:
    scorer = Recording(tiny_scorer, delay=1.0)

    async def late(batcher: MicroBatcher) -> float:
        start = time.perf_counter()
        with pytest.raises(ScoringTimeout, match="did not answer within 100 ms"):
            await batcher.predict(["slow"])
        return time.perf_counter() - start

    waited = _run(scorer, late, deadline=0.1)
    assert isinstance(waited, float) and waited < 0.5


def test_a_caller_that_gives_up_costs_the_model_nothing(tiny_scorer: Scorer) -> None:
    """A client that disconnects while the model is busy: its comments are never scored."""
    scorer = Recording(tiny_scorer, delay=0.2)

    async def one_gives_up(batcher: MicroBatcher) -> list[Prediction]:
        first = asyncio.create_task(batcher.predict(["scored"]))
        await asyncio.sleep(0.05)  # the model is now busy with the first call
        second = asyncio.create_task(batcher.predict(["abandoned", "abandoned too"]))
        await asyncio.sleep(0)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        return await first

    predictions = _run(scorer, one_gives_up, wait=0.0)
    assert isinstance(predictions, list) and len(predictions) == 1
    assert scorer.calls == [1]


def test_a_model_error_reaches_every_caller(tiny_scorer: Scorer) -> None:
    scorer = Recording(tiny_scorer, fail=True)

    async def broken(batcher: MicroBatcher) -> list[object]:
        return await asyncio.gather(
            *(batcher.predict(["x"]) for _ in range(3)), return_exceptions=True
        )

    errors = _run(scorer, broken)
    assert isinstance(errors, list) and len(errors) == 3
    assert all(isinstance(e, RuntimeError) and "exploded" in str(e) for e in errors)


def test_the_http_answer_for_a_timeout_is_503_with_retry_after(client: object) -> None:
    from fastapi.testclient import TestClient

    assert isinstance(client, TestClient)
    app = client.app
    batcher = app.state.batcher  # type: ignore[attr-defined]
    slow = Recording(batcher.scorer, delay=0.5)
    batcher.scorer, batcher.deadline_s = slow, 0.05
    response = client.post("/v1/score", json={"text": "hello"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "scoring_timeout"
