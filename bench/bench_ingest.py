"""Ingest throughput of the running service (score + route + store), beside score-only requests.

Starts the real server (uvicorn subprocess, the committed default model) on a fresh SQLite file
and, when reachable, on PostgreSQL; sends real inbound brand comments in bulk requests.

Usage: python bench/bench_ingest.py [--rows N] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commentdesk.settings import BASELINE_MODEL_DIR, default_data_dir
from service.auth import Role
from tests.server import Server, create_keys


def run(db_url: str, texts: list[str], state_dir: Path) -> None:
    (scorer,) = create_keys(db_url, [Role.SCORER])
    server = Server(BASELINE_MODEL_DIR, db_url, state_dir)
    server.start()
    headers = {"Authorization": f"Bearer {scorer}"}
    try:
        with httpx.Client(base_url=server.url, timeout=120, headers=headers) as client:
            client.post(
                "/v1/score", json={"comments": [{"text": t} for t in texts[:256]]}
            )  # warm-up
            start = time.perf_counter()
            for i in range(0, len(texts), 256):
                response = client.post(
                    "/v1/score", json={"comments": [{"text": t} for t in texts[i : i + 256]]}
                )
                response.raise_for_status()
            score_rate = len(texts) / (time.perf_counter() - start)
            start = time.perf_counter()
            for i in range(0, len(texts), 500):
                batch = [
                    {"source": "bench", "external_id": str(i + j), "text": t}
                    for j, t in enumerate(texts[i : i + 500])
                ]
                response = client.post("/v1/comments", json={"comments": batch})
                response.raise_for_status()
            ingest_rate = len(texts) / (time.perf_counter() - start)
        name = db_url.split(":", 1)[0]
        print(f"{name:<22} score only (256/request): {score_rate:8.0f} comments/s")
        print(
            f"{name:<22} ingest (500/request):     {ingest_rate:8.0f} comments/s  ({ingest_rate / score_rate:.2f}x of score only)"
        )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--postgres", default="postgresql+psycopg://root@127.0.0.1:5432/test")
    args = parser.parse_args()
    data_dir = default_data_dir()
    if data_dir is None:
        sys.exit("no data directory (../shared/data)")
    path = data_dir / "brand_comments" / "unlabelled.jsonl"
    texts = [
        t
        for t in (
            json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()
        )
        if t.strip()
    ]
    texts = (texts * (args.rows // len(texts) + 1))[: args.rows]
    print(f"{len(texts)} real brand comments, model at {BASELINE_MODEL_DIR}")
    with tempfile.TemporaryDirectory() as tmp:
        run(f"sqlite:///{tmp}/bench.db", texts, Path(tmp))
        engine = create_engine(args.postgres)
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        except OperationalError:
            print("PostgreSQL not reachable: skipped")
            return
        finally:
            engine.dispose()
        run(args.postgres, texts, Path(tmp))


if __name__ == "__main__":
    main()
