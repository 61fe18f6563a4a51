"""Checks on the real shared data and the committed default model (marked `data`)."""

from pathlib import Path

import pytest

from commentdesk.settings import BASELINE_MODEL_DIR, DEFAULT_MODEL_DIR, PUBLIC_MODEL_DIR
from model.artifact import read_manifest
from model.scorer import load_scorer
from model.tasks import Task
from training.catalog import Catalog, load_catalog, load_semeval_pool, overlap_table
from training.evaluate import cross_validated_figures, evaluate_references, evaluate_scorer

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def catalog(real_data_dir: Path) -> Catalog:
    return load_catalog(real_data_dir)


def test_every_training_set_is_clean_of_evaluation_texts(catalog: Catalog) -> None:
    overlaps = overlap_table(catalog.examples)
    assert len(overlaps) >= 40
    assert overlaps["overlap"].sum() == 0


def test_semeval_pool_loses_the_tweeteval_sentiment_val_and_test_copies(
    catalog: Catalog, real_data_dir: Path
) -> None:
    pool = load_semeval_pool(real_data_dir)
    kept = catalog.select(Task.SENTIMENT, "train", ["semeval2017"])
    # The data README: about 2,000 val tweets are in the pool under other formatting.
    assert 1_900 <= len(pool) - len(kept) <= 2_300
    assert catalog.removed["semeval2017"] == len(pool) - len(kept)


def test_official_split_sizes(catalog: Catalog) -> None:
    assert len(catalog.select(Task.SENTIMENT, "test", ["tweeteval-sentiment"])) == 12_284
    assert len(catalog.select(Task.OFFENSIVE, "test", ["tweeteval-offensive"])) == 860
    assert len(catalog.select(Task.HATE, "test", ["tweeteval-hate"])) == 2_970
    assert len(catalog.select(Task.QUESTION, "dev", ["brand_comments"])) == 1_305


# Each committed model against the bars it was accepted on (issue 2 for the baseline; the
# issue 3 bars the MiniLM models meet, scored by the int8 ONNX runtime that serves them). The
# served default's encoder was adapted to brand_comments dev's question and sentiment labels: its
# figures there are the cross-validated ones from its manifest, as `commentdesk evaluate` reports.
MINILM_BARS = {
    (Task.SENTIMENT, "tweeteval-sentiment/test"): 0.68,
    (Task.OFFENSIVE, "tweeteval-offensive/test"): 0.79,
    (Task.EMOTION, "tweeteval-emotion/test"): 0.72,
    (Task.IRONY, "tweeteval-irony/test"): 0.60,
    (Task.QUESTION, "brand_comments/dev"): 0.70,
}
COMMITTED_BARS = {
    BASELINE_MODEL_DIR: {
        (Task.SENTIMENT, "tweeteval-sentiment/test"): 0.60,
        (Task.OFFENSIVE, "tweeteval-offensive/test"): 0.74,
        (Task.QUESTION, "brand_comments/dev"): 0.70,
    },
    PUBLIC_MODEL_DIR: MINILM_BARS,
    DEFAULT_MODEL_DIR: MINILM_BARS
    | {(Task.QUESTION, "brand_comments/dev"): 0.81, (Task.SENTIMENT, "brand_comments/dev"): 0.72},
}


@pytest.mark.parametrize("model_dir", list(COMMITTED_BARS), ids=lambda p: p.name)
def test_committed_models_meet_their_bars(catalog: Catalog, model_dir: Path) -> None:
    read_manifest(model_dir)
    scorer = load_scorer(model_dir)
    results, predictions = evaluate_scorer(scorer, catalog, model_dir.name)
    cross_validated = cross_validated_figures(read_manifest(model_dir), results, predictions)
    assert bool(cross_validated) == (model_dir == DEFAULT_MODEL_DIR)
    value = {(r.task, r.dataset): r.value for r in results}
    for split, bar in COMMITTED_BARS[model_dir].items():
        assert value[split] >= bar, (split, value[split])


def test_reference_systems_reproduce_the_documented_figures(catalog: Catalog) -> None:
    value = {(r.system, r.task, r.dataset): r.value for r in evaluate_references(catalog)}
    assert value[("VADER", Task.SENTIMENT, "tweeteval-sentiment/test")] == pytest.approx(
        0.570, abs=0.001
    )
    offensive = value[("alt-profanity-check", Task.OFFENSIVE, "tweeteval-offensive/test")]
    assert offensive == pytest.approx(0.732, abs=0.001)


def test_contains_question_mark_rule_matches_the_issue_figure(catalog: Catalog) -> None:
    from training.metrics import official_metric

    rows = catalog.select(Task.QUESTION, "dev", ["brand_comments"])
    predicted = ["question" if "?" in text else "not-question" for text in rows["text"]]
    assert official_metric(Task.QUESTION, list(rows["label"]), predicted) == pytest.approx(
        0.646, abs=0.001
    )
