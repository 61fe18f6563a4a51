from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError
from transformers import BertModel

from commentdesk.settings import PROJECT_ROOT, Settings, default_data_dir
from model.artifact import sha256_file
from model.encoder import base_encoder_dir
from model.scorer import Scorer, load_scorer
from model.transformer import tiny_encoder_config
from service.app import create_app
from service.auth import Role, create_key
from tests.synthetic import make_data_dir
from training.baseline import train_baseline
from training.config import load_config
from training.transformer import train_transformer

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_python(script: str) -> list[str]:
    """Runs ``script`` in a fresh interpreter in the project (for what a process can set only
    once, or must not have imported); returns its output lines, failing with its stderr."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("data"))


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture and tokenizer as MiniLM, 32 hidden units, random weights."""
    directory = tmp_path_factory.mktemp("tiny-encoder")
    torch.manual_seed(0)
    BertModel(tiny_encoder_config(vocab_size=30522), add_pooling_layer=False).save_pretrained(
        directory
    )
    for name in TOKENIZER_FILES:
        shutil.copy(base_encoder_dir() / name, directory / name)
    return directory


@pytest.fixture(scope="session")
def tiny_replies(tiny_encoder_dir: Path) -> dict[str, object]:
    """Reply settings that embed with the tiny encoder instead of loading MiniLM in every app."""
    return {
        "encoder_dir": tiny_encoder_dir,
        "encoder_sha256": sha256_file(tiny_encoder_dir / "model.safetensors"),
    }


@pytest.fixture(scope="session")
def tiny_config() -> dict[str, object]:
    """The real baseline config, shrunk to small vocabularies for tiny data."""
    return load_config(
        PROJECT_ROOT / "configs" / "baseline.toml",
        ["features.min_df=1", "features.word_max_features=500", "features.char_max_features=500"],
    )


@pytest.fixture(scope="session")
def tiny_model_dir(
    tmp_path_factory: pytest.TempPathFactory,
    synthetic_data_dir: Path,
    tiny_config: dict[str, object],
) -> Path:
    output = tmp_path_factory.mktemp("model")
    train_baseline(tiny_config, synthetic_data_dir, output)
    return output


@pytest.fixture(scope="session")
def tiny_transformer_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_encoder_dir: Path, synthetic_data_dir: Path
) -> Path:
    overrides = [
        "optim.max_steps=40", "optim.eval_every=20", "optim.batch_size=8", "optim.lr=0.01", "optim.head_lr=0.01",
        "network.lora_rank=2", "network.max_length=16",
    ]  # fmt: skip
    config = load_config(PROJECT_ROOT / "configs" / "multitask.toml", overrides)
    config["base_encoder_sha256"] = sha256_file(tiny_encoder_dir / "model.safetensors")
    output = tmp_path_factory.mktemp("minilm")
    train_transformer(config, synthetic_data_dir, output, encoder_dir=tiny_encoder_dir)
    return output


@pytest.fixture()
def brand_question_labels(synthetic_data_dir: Path, tmp_path: Path) -> Path:
    """brand_comments dev's question labels as decisions, exported by `commentdesk data labels`."""
    from typer.testing import CliRunner

    from commentdesk.cli import app as cli

    path = tmp_path / "brand-questions.jsonl"
    exported = CliRunner().invoke(
        cli,
        ["data", "labels", "brand_comments/dev", "--task", "question", "-o", str(path),
         "--data-dir", str(synthetic_data_dir)],
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    return path


@pytest.fixture(scope="session")
def tiny_scorer(tiny_model_dir: Path) -> Scorer:
    return load_scorer(tiny_model_dir)


POSTGRES_URL = os.environ.get(
    "COMMENTDESK_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each queue test runs on a fresh SQLite file and on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queue.db'}"
    try:
        _reset_postgres(POSTGRES_URL)
    except OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: PostgreSQL at {POSTGRES_URL} is not reachable: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is not reachable")
    return POSTGRES_URL


@dataclass
class Api:
    """A test client on a running app, with one API key per role."""

    client: TestClient
    keys: dict[Role, str]
    app: FastAPI

    def auth(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@contextmanager
def running_api(
    tiny_model_dir: Path, db_url: str, tmp_path: Path, **overrides: Any
) -> Iterator[Api]:
    # Queue items carry no reply suggestions unless a test asks (they need an embedder).
    overrides.setdefault("replies", {"queue_suggestions": 0})
    settings = Settings(
        model_dir=tiny_model_dir,
        data_dir=None,
        state_dir=tmp_path,
        database={"url": db_url},
        **overrides,
    )
    app = create_app(settings)
    with TestClient(app) as test_client, app.state.sessions() as session:
        keys = {role: create_key(session, f"{role.value}-1", role)[1] for role in Role}
        yield Api(test_client, keys, app)


@pytest.fixture()
def api(tiny_model_dir: Path, db_url: str, tmp_path: Path) -> Iterator[Api]:
    with running_api(tiny_model_dir, db_url, tmp_path) as running:
        yield running


@pytest.fixture()
def client(tiny_model_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    """A client of an app on SQLite whose requests carry a scorer key."""
    with running_api(tiny_model_dir, f"sqlite:///{tmp_path / 'app.db'}", tmp_path) as running:
        running.client.headers.update(running.auth(Role.SCORER))
        yield running.client


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The shared data directory; skipped when absent, except in CI where that is an error."""
    configured = os.environ.get("COMMENTDESK_DATA_DIR")
    path = Path(configured) if configured else default_data_dir()
    if path is None or not path.is_dir():
        message = (
            "shared data directory not found (set COMMENTDESK_DATA_DIR or place ../shared/data)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    return path
