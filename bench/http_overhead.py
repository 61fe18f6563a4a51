"""What the HTTP side of POST /v1/score costs, with the model taken out of the picture.

Two servers, each in its own process on one core's worth of event loop, driven in alternating
rounds by the load generator of bench/latency.py (32 keep-alive clients, one real tweet per
request):

- ``framework``: the floor: a bare FastAPI app with one POST route that validates a
  ``{"text": ...}`` body and returns a constant JSON answer (uvicorn, uvloop, httptools);
- ``commentdesk``: the real service (``create_app``: key check, middlewares, access log,
  micro-batcher, response building) whose scorer answers at once with a precomputed prediction,
  so all the CPU time left is the HTTP side.

Prints requests/s and the server's CPU time per request (from /proc/PID/stat) for each, and
their ratio: what the service adds to the framework per request.

Usage: python bench/http_overhead.py [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging.config
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import uvloop
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.latency import cpu_seconds, drive, server_env, start_server, tweets

SERVERS = ("framework", "commentdesk")


class Comment(BaseModel):
    """The framework server's body (module level: FastAPI resolves the annotation by name)."""

    text: str


def serve_framework(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/score")
    async def score(comment: Comment) -> dict[str, object]:
        return {"model": {"name": "bare", "version": "0"}, "results": [{"labels": {}}]}

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


def serve_commentdesk(port: int) -> None:
    """``commentdesk serve`` as the CLI runs it, with the scorer's answer precomputed."""
    import uvicorn

    from commentdesk.settings import Settings
    from service.app import create_app
    from service.logs import log_config

    settings = Settings()
    logs = log_config(settings.server.log_format, settings.server.log_level)
    logging.config.dictConfig(logs)
    app = create_app(settings)

    def instant_model() -> None:
        while getattr(app.state, "batcher", None) is None:  # the lifespan loads the model
            time.sleep(0.05)
        scorer = app.state.batcher.scorer
        answer = scorer.predict(["a precomputed prediction"])[0]
        scorer.predict = lambda texts: [answer] * len(texts)

    threading.Thread(target=instant_model, daemon=True).start()
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_config=logs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        {"framework": serve_framework, "commentdesk": serve_commentdesk}[args.serve](args.port)
        return

    texts = tweets()
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in SERVERS}
    with tempfile.TemporaryDirectory() as state:
        env, key = server_env(state)
        for _ in range(args.rounds):
            for kind in SERVERS:
                server, port = start_server(
                    env, Path(state), (sys.executable, __file__, "--serve", kind)
                )
                try:
                    # Warm-up; the instant model is in place milliseconds after start-up.
                    uvloop.run(drive(port, key, texts, 4, 1.0))
                    cpu_before = cpu_seconds(server.pid)
                    latencies, errors, elapsed = uvloop.run(
                        drive(port, key, texts, args.concurrency, args.seconds)
                    )
                    cpu = cpu_seconds(server.pid) - cpu_before
                finally:
                    server.terminate()
                    server.wait(timeout=30)
                if errors:
                    sys.exit(f"{kind}: {errors} errors")
                results[kind].append((len(latencies) / elapsed, cpu / len(latencies)))

    print(
        f"POST /v1/score, {args.concurrency} clients, {args.rounds} alternating rounds of "
        f"{args.seconds:.0f} s (median)"
    )
    print("server          req/s   CPU us/request")
    medians = {}
    for kind in SERVERS:
        rate, cpu = np.median(np.array(results[kind]), axis=0)
        medians[kind] = cpu
        print(f"{kind:12s} {rate:8.0f} {cpu * 1e6:16.0f}")
    ratios = [
        c[1] / f[1] for f, c in zip(results["framework"], results["commentdesk"], strict=True)
    ]
    print(
        f"commentdesk / framework CPU per request: {np.median(ratios):.2f}x "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}); "
        f"the service adds {(medians['commentdesk'] - medians['framework']) * 1e6:.0f} us"
    )


if __name__ == "__main__":
    main()
