"""The two-model ensemble: weighted probabilities, weights and thresholds fitted on validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.ensemble import EnsembleScorer
from model.scorer import Scorer, load_scorer
from model.tasks import Task
from training.catalog import load_catalog
from training.ensemble import WEIGHTS, fit_ensemble

TEXTS = ["I love it", "you idiot", "where is my parcel?", "meh"]


def test_weights_mix_probabilities_and_weight_one_is_the_first_model(
    tiny_scorer: Scorer, tiny_transformer_dir: Path, tiny_encoder_dir: Path
) -> None:
    other = load_scorer(tiny_transformer_dir, encoder_dir=tiny_encoder_dir)
    own_thresholds = {t: spec.threshold for t, spec in tiny_scorer.manifest.tasks.items()}  # type: ignore[attr-defined]
    only_first = EnsembleScorer(tiny_scorer, other, dict.fromkeys(Task, 1.0), own_thresholds)
    half = EnsembleScorer(tiny_scorer, other, dict.fromkeys(Task, 0.5), {})
    a, b = tiny_scorer.predict(TEXTS), other.predict(TEXTS)
    for task in Task:
        for x, first, mixed, second in zip(
            only_first.predict(TEXTS), a, half.predict(TEXTS), b, strict=True
        ):
            assert x.scores[task] == pytest.approx(first.scores[task])
            assert x.labels[task] == first.labels[task]
            for label, p in mixed.scores[task].items():
                assert p == pytest.approx(
                    (first.scores[task][label] + second.scores[task][label]) / 2
                )
    assert half.predict([]) == []


def test_fit_picks_weights_on_validation_only(
    tiny_scorer: Scorer,
    tiny_transformer_dir: Path,
    tiny_encoder_dir: Path,
    synthetic_data_dir: Path,
) -> None:
    other = load_scorer(tiny_transformer_dir, encoder_dir=tiny_encoder_dir)
    catalog = load_catalog(synthetic_data_dir)
    sources = {Task.SENTIMENT: "tweeteval-sentiment", Task.OFFENSIVE: "tweeteval-offensive"}
    ensemble, report = fit_ensemble(tiny_scorer, other, catalog, sources)
    assert set(report) == {"sentiment", "offensive"}
    for values in report.values():
        assert values["weight"] in WEIGHTS
        assert values["val_metric"] >= max(values["val_first_only"], values["val_second_only"])
    assert ensemble.weights[Task.QUESTION] == 0.5  # no validation source: untuned
    assert ensemble.thresholds[Task.OFFENSIVE] is not None
