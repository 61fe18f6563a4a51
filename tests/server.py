"""Run the real service in a subprocess (uvicorn) for race, crash and throughput checks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.auth import Role, create_key
from service.db.engine import make_engine, make_sessionmaker, upgrade


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_keys(db_url: str, roles: list[Role]) -> list[str]:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as session:
            return [
                create_key(session, f"{role.value}-{i}", role)[1] for i, role in enumerate(roles)
            ]
    finally:
        engine.dispose()


@dataclass
class Server:
    model_dir: Path
    db_url: str
    state_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # more COMMENTDESK_* settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0, ready_path: str = "/readyz") -> None:
        """Start it and wait until ``ready_path`` answers 200."""
        self.port = self.port or free_port()
        env = {
            **os.environ,
            "COMMENTDESK_MODEL_DIR": str(self.model_dir),
            "COMMENTDESK_DATABASE__URL": self.db_url,
            "COMMENTDESK_STATE_DIR": str(self.state_dir),
            "HF_HUB_OFFLINE": "1",
            # Race and crash tests send as fast as they can: no per-key rate limit (429).
            "COMMENTDESK_API__RATE_LIMIT_PER_SECOND": "0",
            **self.env,
        }
        command = [sys.executable, "-m", "commentdesk.cli", "serve", "--port", str(self.port)]
        log = (self.state_dir / "server.log").open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}; see {self.state_dir / 'server.log'}"
                )
            try:
                if httpx.get(f"{self.url}{ready_path}", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing; what survives is what was committed."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
