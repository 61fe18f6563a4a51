"""Temperature scaling (Guo et al. 2017): one scalar per task, fitted on validation logits."""

from __future__ import annotations

import numpy as np
import torch


def fit_temperature(logits: np.ndarray, gold: np.ndarray, max_iter: int = 200) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T)."""
    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    gold_t = torch.tensor(np.asarray(gold), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.CrossEntropyLoss()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss: torch.Tensor = loss_fn(logits_t / log_t.exp(), gold_t)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return float(log_t.exp().item())
