"""Sentence embeddings from the pinned base encoder (all-MiniLM-L6-v2's own use: mean pooling,
L2-normalised), for similarity between comments and reply-template examples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import BertModel

from model.encoder import BASE_ENCODER_SHA256, verified_encoder_dir
from model.transformer import encode, load_tokenizer


class SentenceEmbedder:
    def __init__(
        self,
        encoder_dir: Path | None = None,
        expected_sha256: str = BASE_ENCODER_SHA256,
        max_length: int = 128,
    ):
        directory = verified_encoder_dir(encoder_dir, expected_sha256)
        self.model = BertModel.from_pretrained(directory, add_pooling_layer=False)
        self.model.eval()  # type: ignore[no-untyped-call]
        self.tokenizer = load_tokenizer(directory)
        self.max_length = max_length

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """One unit-length row per text."""
        if not texts:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = encode(
                    self.tokenizer, list(texts[start : start + batch_size]), self.max_length
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(rows).astype(np.float32)
