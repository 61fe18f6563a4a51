"""Load test: `commentdesk serve` under mixed traffic at a fixed concurrency for a bounded time.

Starts the service as a user would (its own process; SQLite in a temporary state directory, or
``--database-url``; the chosen model), creates one API key per virtual user, waits for /readyz,
then runs ``--concurrency`` keep-alive HTTP/1.1 clients (asyncio streams, so the generator costs
little of the cores the server also needs):
  - scorer clients (5 of 8): 70 % ``POST /v1/score`` with 1-4 real tweets, 30 % ``POST
    /v1/comments`` ingesting 1-5 new comments;
  - viewer clients (2 of 8): ``GET /v1/queue`` pages of the needs-reply and flagged views;
  - moderator clients (1 of 8): ``POST /v1/queue/claim`` one item, then decide on it.
A warm-up at full concurrency comes first; the server's resident memory is read after it and
after the measured run. Every answer other than the expected 2xx is an error, except 429 (the
per-key rate limit), which is counted apart as intended.

Usage: python bench/load.py [--seconds 60] [--concurrency 64] [--warmup 15]
                            [--model-dir artifacts/minilm] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from latency import rss_mb, start_server, tweets

from commentdesk.settings import PROJECT_ROOT


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    transport_errors: int = 0
    error_codes: Counter[str] = field(default_factory=Counter)


class Connection:
    def __init__(self, port: int, key: str):
        self.port, self.key = port, key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, method: str, path: str, body: object | None = None) -> tuple[int, bytes]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        payload = json.dumps(body).encode() if body is not None else b""
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {self.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            return status, await self.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, StopIteration):
            self.writer.close()
            self.reader = self.writer = None
            raise OSError("connection broken") from None


async def run_clients(
    port: int, keys: dict[str, list[str]], texts: list[str], concurrency: int, seconds: float
) -> tuple[Tally, float]:
    tally = Tally()
    deadline = time.perf_counter() + seconds
    serial = iter(range(10**9))

    async def timed(kind: str, connection: Connection, method: str, path: str, body: object = None):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            status, answer = await connection.call(method, path, body)
        except OSError:
            tally.transport_errors += 1
            return None
        tally.latencies[kind].append(time.perf_counter() - start)
        tally.statuses[kind][status] += 1
        if status >= 300 and status != 429:
            try:
                code = json.loads(answer)["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "?"
            tally.error_codes[f"{kind} {status} {code}"] += 1
        return status, answer

    async def scorer(index: int) -> None:
        connection, rng = Connection(port, keys["scorer"][index]), random.Random(index)
        while time.perf_counter() < deadline:
            if rng.random() < 0.7:
                picked = rng.sample(texts, rng.randint(1, 4))
                body = {"comments": [{"id": str(i), "text": t} for i, t in enumerate(picked)]}
                await timed("score", connection, "POST", "/v1/score", body)
            else:
                comments = [
                    {"source": "bench", "external_id": f"{index}-{next(serial)}", "text": text}
                    for text in rng.sample(texts, rng.randint(1, 5))
                ]
                await timed("ingest", connection, "POST", "/v1/comments", {"comments": comments})

    async def viewer(index: int) -> None:
        connection, rng = Connection(port, keys["viewer"][index]), random.Random(1000 + index)
        while time.perf_counter() < deadline:
            view = rng.choice(["needs_reply", "flagged"])
            await timed("queue", connection, "GET", f"/v1/queue?view={view}&limit=20")

    async def moderator(index: int) -> None:
        connection, rng = Connection(port, keys["moderator"][index]), random.Random(2000 + index)
        while time.perf_counter() < deadline:
            claimed = await timed("claim", connection, "POST", "/v1/queue/claim", {"count": 1})
            if claimed is None or claimed[0] != 200:
                continue
            for item in json.loads(claimed[1]):
                decision = {"action": rng.choice(["approve", "hide", "escalate"])}
                path = f"/v1/queue/{item['id']}/decision"
                await timed("decide", connection, "POST", path, decision)

    roles = [role_of(i, concurrency) for i in range(concurrency)]
    counters: Counter[str] = Counter()
    tasks = []
    for role in roles:
        client = {"scorer": scorer, "viewer": viewer, "moderator": moderator}[role]
        tasks.append(client(counters[role]))
        counters[role] += 1
    start = time.perf_counter()
    await asyncio.gather(*tasks)
    return tally, time.perf_counter() - start


def role_of(index: int, concurrency: int) -> str:
    slot = index % 8
    return "moderator" if slot == 7 else "viewer" if slot >= 5 else "scorer"


def create_keys(database_url: str, roles: list[str]) -> dict[str, list[str]]:
    from service.auth import Role, create_key
    from service.db.engine import make_engine, make_sessionmaker, upgrade

    upgrade(database_url)
    engine = make_engine(database_url)
    keys: dict[str, list[str]] = defaultdict(list)
    with make_sessionmaker(engine)() as session:
        for i, role in enumerate(roles):
            keys[role].append(create_key(session, f"load-{role}-{i}", Role(role))[1])
    engine.dispose()
    return keys


def report(tally: Tally, elapsed: float) -> int:
    print("kind       requests    2xx    429  errors   req/s   p50 ms   p95 ms   p99 ms")
    unintended = tally.transport_errors
    every: list[float] = []
    for kind in ["score", "ingest", "queue", "claim", "decide"]:
        latencies = np.array(tally.latencies.get(kind, [])) * 1000
        statuses = tally.statuses.get(kind, Counter())
        ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
        limited = statuses.get(429, 0)
        errors = sum(statuses.values()) - ok - limited
        unintended += errors
        every.extend(latencies)
        if len(latencies):
            print(
                f"{kind:8s} {len(latencies):10d} {ok:6d} {limited:6d} {errors:7d} "
                f"{len(latencies) / elapsed:7.1f} {np.percentile(latencies, 50):8.1f} "
                f"{np.percentile(latencies, 95):8.1f} {np.percentile(latencies, 99):8.1f}"
            )
    all_ms = np.array(every)
    print(
        f"all      {len(all_ms):10d}   transport errors {tally.transport_errors}, unintended "
        f"errors {unintended}; {len(all_ms) / elapsed:.1f} req/s; p50 "
        f"{np.percentile(all_ms, 50):.1f} ms, p99 {np.percentile(all_ms, 99):.1f} ms"
    )
    for error, count in tally.error_codes.most_common():
        print(f"  unexpected: {error} x{count}")
    return unintended


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--model-dir", type=Path, default=PROJECT_ROOT / "artifacts" / "minilm")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    texts = tweets()

    with tempfile.TemporaryDirectory() as state:
        database_url = args.database_url or f"sqlite:///{state}/commentdesk.db"
        roles = [role_of(i, args.concurrency) for i in range(args.concurrency)]
        keys = create_keys(database_url, roles)
        env = {
            **os.environ,
            "COMMENTDESK_MODEL_DIR": str(args.model_dir),
            "COMMENTDESK_STATE_DIR": state,
            "COMMENTDESK_DATABASE__URL": database_url,
            "COMMENTDESK_SERVER__ACCESS_LOG": "false",
        }
        server, port = start_server(env, Path(state))
        log = Path(state) / "server.log"
        try:
            counts = Counter(roles)
            print(
                f"{args.concurrency} clients ({counts['scorer']} scorer, {counts['viewer']} "
                f"viewer, {counts['moderator']} moderator, one key each), model "
                f"{args.model_dir.name}, database {database_url.split(':', 1)[0]}"
            )
            uvloop.run(run_clients(port, keys, texts, args.concurrency, args.warmup))
            warm = rss_mb(server.pid)
            print(f"after {args.warmup:.0f} s warm-up: server RSS {warm:.0f} MB")
            tally, elapsed = uvloop.run(
                run_clients(port, keys, texts, args.concurrency, args.seconds)
            )
            after = rss_mb(server.pid)
            unintended = report(tally, elapsed)
            print(
                f"server RSS after the {args.seconds:.0f} s run: {after:.0f} MB "
                f"({after / warm - 1:+.1%} vs after warm-up)"
            )
            errors = [line for line in log.read_text().splitlines() if '"level": "ERROR"' in line]
            print(f"server log: {len(errors)} ERROR records")
            for line in errors[:3]:
                print(f"  {line[:600]}")
            if unintended:
                sys.exit(1)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
