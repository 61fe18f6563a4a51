from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score

from model.tasks import Task
from training.config import ConfigError, apply_overrides, load_config
from training.metrics import best_threshold, expected_calibration_error, official_metric


def test_sentiment_metric_is_macro_recall() -> None:
    gold = ["negative", "neutral", "positive", "positive"]
    pred = ["negative", "positive", "positive", "neutral"]
    assert official_metric(Task.SENTIMENT, gold, pred) == pytest.approx(
        recall_score(gold, pred, average="macro")
    )
    assert official_metric(Task.SENTIMENT, gold, pred) == pytest.approx((1 + 0 + 0.5) / 3)


def test_irony_metric_is_f1_of_the_irony_class() -> None:
    gold = ["irony", "irony", "non-irony", "non-irony"]
    pred = ["irony", "non-irony", "irony", "non-irony"]
    assert official_metric(Task.IRONY, gold, pred) == pytest.approx(0.5)


def test_offensive_metric_is_macro_f1() -> None:
    gold = ["offensive", "not-offensive", "not-offensive", "not-offensive"]
    pred = ["offensive", "offensive", "not-offensive", "not-offensive"]
    expected = f1_score(gold, pred, average="macro")
    assert official_metric(Task.OFFENSIVE, gold, pred) == pytest.approx(expected)


def test_best_threshold_separates_separable_scores() -> None:
    probability = np.array([0.1, 0.2, 0.35, 0.6, 0.7, 0.9])
    gold = np.array([False, False, False, True, True, True])
    threshold = best_threshold(gold, probability, Task.OFFENSIVE)
    assert 0.35 < threshold <= 0.6


def test_calibration_error_zero_when_confidence_matches_accuracy() -> None:
    probabilities = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probabilities, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    assert expected_calibration_error(probabilities, np.array([1, 1, 1, 1])) == pytest.approx(0.75)


def test_overrides_parse_values_and_refuse_unknown_keys() -> None:
    config = {"seed": 1, "features": {"min_df": 2}, "name": "x"}
    result = apply_overrides(config, ["features.min_df=5", "name=baseline-2", "seed=3"])
    assert result == {"seed": 3, "features": {"min_df": 5}, "name": "baseline-2"}
    assert config["features"] == {"min_df": 2}
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(config, ["features.max_df=5"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(config, ["features.min_df"])


def test_load_config_reports_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(bad)
