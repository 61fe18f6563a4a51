"""The multi-task network: one MiniLM encoder pass, one small head per task, LoRA adapters.

The base encoder stays frozen and pinned (model.encoder); training adds low-rank adapters to its
linear layers and learns the heads, so a trained model is a few MB of adapters and heads on top
of a file everyone already has. ``lora_rank = 0`` trains every encoder weight instead (full
fine-tuning: the comparison docs/experiments.md records; its weights are the whole encoder).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerBase

from model.tasks import LABELS, Task
from model.text import normalize

LORA_TARGETS = (
    "query",
    "key",
    "value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


@dataclass(frozen=True)
class NetworkConfig:
    max_length: int = 64
    lora_rank: int = 8  # 0: full fine-tuning, no adapters
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    head_dropout: float = 0.1


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (Hu et al. 2021)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        super().__init__()
        self.base = base
        for parameter in self.base.parameters():
            parameter.requires_grad = False
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (self.dropout(x) @ self.lora_a.T) @ self.lora_b.T
        result: torch.Tensor = self.base(x) + update * self.scale
        return result


def _add_lora(encoder: nn.Module, config: NetworkConfig) -> None:
    for name, module in list(encoder.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if (
                isinstance(child, nn.Linear)
                and ".layer." in f".{full}"
                and full.endswith(LORA_TARGETS)
            ):
                setattr(
                    module,
                    child_name,
                    LoRALinear(child, config.lora_rank, config.lora_alpha, config.lora_dropout),
                )


class MultiTaskNetwork(nn.Module):
    def __init__(self, encoder: BertModel, tasks: Sequence[Task], config: NetworkConfig):
        super().__init__()
        self.config = config
        self.tasks = tuple(tasks)
        if config.lora_rank > 0:
            for parameter in encoder.parameters():
                parameter.requires_grad = False
            _add_lora(encoder, config)
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.heads = nn.ModuleDict(
            {
                task.value: nn.Sequential(
                    nn.Dropout(config.head_dropout), nn.Linear(hidden, len(LABELS[task]))
                )
                for task in self.tasks
            }
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        tasks: Iterable[Task] | None = None,
    ) -> dict[Task, torch.Tensor]:
        """Logits per task from one encoder pass."""
        pooled = self.pool(input_ids, attention_mask)
        return {task: self.heads[task.value](pooled) for task in (tasks or self.tasks)}

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The comment vector every head reads: mean pooling, as all-MiniLM-L6-v2 was trained."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled: torch.Tensor = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return pooled

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Only what training changed: adapters (or, fully fine-tuned, the encoder) and heads."""
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        return {
            name: tensor.detach().clone()
            for name, tensor in self.state_dict().items()
            if name in names
        }

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = {name for name, p in self.named_parameters() if p.requires_grad}
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(
                f"adapter weights do not fit the network: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        self.load_state_dict(state, strict=False)


def build_network(
    encoder_dir: Path, tasks: Sequence[Task], config: NetworkConfig
) -> MultiTaskNetwork:
    encoder = BertModel.from_pretrained(encoder_dir, add_pooling_layer=False)
    return MultiTaskNetwork(encoder, tasks, config)


def load_tokenizer(encoder_dir: Path) -> PreTrainedTokenizerBase:
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(encoder_dir)
    return tokenizer


def encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    """Tokenise normalised texts into a padded batch."""
    batch = tokenizer(
        [normalize(text) for text in texts],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def tiny_encoder_config(vocab_size: int) -> BertConfig:
    """A randomly initialised encoder of the same architecture, small enough for unit tests."""
    return BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128,
    )  # fmt: skip


def config_dict(config: NetworkConfig) -> dict[str, float | int]:
    return asdict(config)
