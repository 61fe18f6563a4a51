from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from commentdesk.settings import DEFAULT_MODEL_DIR, PROJECT_ROOT, Settings, default_data_dir
from model.scorer import Scorer, load_scorer
from service.app import create_app
from tests.synthetic import make_data_dir
from training.baseline import train_baseline
from training.config import load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("data"))


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
def tiny_scorer(tiny_model_dir: Path) -> Scorer:
    return load_scorer(tiny_model_dir)


@pytest.fixture()
def client(tiny_model_dir: Path) -> Iterator[TestClient]:
    app = create_app(Settings(model_dir=tiny_model_dir, data_dir=None))
    with TestClient(app) as test_client:
        yield test_client


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


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    return DEFAULT_MODEL_DIR
