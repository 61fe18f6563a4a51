"""Calibration on validation logits: temperature scaling (Guo et al. 2017), plus a per-label
bias where it generalises better (the same paper's vector scaling, with one shared scale)."""

from __future__ import annotations

import numpy as np
import torch


def _fit(
    logits: np.ndarray, gold: np.ndarray, bias: bool, max_iter: int
) -> tuple[float, np.ndarray]:
    logits_t = torch.as_tensor(np.array(logits), dtype=torch.float64)
    gold_t = torch.tensor(np.asarray(gold), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    offset = torch.zeros(logits_t.shape[1], dtype=torch.float64, requires_grad=bias)
    parameters = [log_t, offset] if bias else [log_t]
    optimizer = torch.optim.LBFGS(
        parameters, lr=0.1 if not bias else 1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
    )
    loss_fn = torch.nn.CrossEntropyLoss()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss: torch.Tensor = loss_fn(logits_t / log_t.exp() + offset, gold_t)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    centred = offset.detach().numpy() - offset.detach().numpy().mean()  # softmax ignores a shift
    return float(log_t.exp().item()), centred


def fit_temperature(logits: np.ndarray, gold: np.ndarray, max_iter: int = 200) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T)."""
    return _fit(logits, gold, bias=False, max_iter=max_iter)[0]


def _nll(logits: np.ndarray, gold: np.ndarray, temperature: float, bias: np.ndarray) -> float:
    scaled = logits.astype(np.float64) / temperature + bias
    scaled -= scaled.max(axis=1, keepdims=True)
    log_p = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(gold)), gold].mean())


def fit_calibration(
    logits: np.ndarray, gold: np.ndarray, folds: int = 5, seed: int = 0
) -> tuple[float, list[float] | None]:
    """Temperature scaling, or temperature plus a per-label bias when that lowers the negative
    log-likelihood of held-out validation rows (``folds``-fold cross-validation on the same
    validation data): the bias corrects a head that favours one label overall, and the
    held-out check keeps it from fitting noise. Returns the temperature and the bias (or None).
    """
    gold = np.asarray(gold)
    fold_of = np.random.default_rng(seed).integers(0, folds, len(gold))
    held_out = {False: 0.0, True: 0.0}
    for fold in range(folds):
        train, test = fold_of != fold, fold_of == fold
        if not test.any() or len(np.unique(gold[train])) < 2:
            return fit_temperature(logits, gold), None
        for bias in (False, True):
            temperature, offset = _fit(logits[train], gold[train], bias, 200)
            held_out[bias] += _nll(logits[test], gold[test], temperature, offset) * test.sum()
    if held_out[True] >= held_out[False]:
        return fit_temperature(logits, gold), None
    temperature, offset = _fit(logits, gold, bias=True, max_iter=200)
    return temperature, [round(float(b), 6) for b in offset]
