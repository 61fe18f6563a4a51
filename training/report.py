"""Write ``docs/model-card.md`` from measured results: nothing in it is typed in by hand."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from model.artifact import Manifest
from model.scorer import Scorer
from model.tasks import LABELS, Task
from training.catalog import Catalog
from training.evaluate import (
    CROSS_VALIDATED,
    EVALUATIONS,
    calibration_table,
    confusion_markdown,
    markdown_table,
)


def _config_file(manifest: Manifest) -> str:
    return (
        "configs/multitask.toml" if manifest.kind == "transformer-lora" else "configs/baseline.toml"
    )


LICENCES = """| data set | used for | licence (as stated by its source) |
|---|---|---|
| TweetEval (cardiffnlp) | sentiment val/test, offensive, hate, emotion, irony | research release; each task's original terms and Twitter's terms apply |
| SemEval-2017 task 4A pool | sentiment training | MIT (code); tweets under Twitter's terms |
| Davidson et al. 2017 | offensive / hate check (fixed seeded split) | MIT |
| SST-2 | out-of-domain polarity check | MIT (repo) |
| brand_comments (TWCS) | question weak labels (unlabelled part), in-domain check (dev) | CC BY-NC-SA 4.0 |"""

INTENDED_USE = """## Intended use
Triage of comments written to a brand's social-media accounts: flag likely offensive or hateful
comments for a human moderator, surface comments that ask the brand for an answer, and track the
mood of the audience. It is an aid to moderators, not an automatic judge: every hide or ban
decision should stay with a person, and the thresholds are the brand's to set. A brand adapts it
from its moderators' decisions (`commentdesk calibrate`, `commentdesk train --feedback`); what
that gained on real brand comments is in `docs/learning-from-moderators.md`.

## Known failure modes
- **Sarcasm and irony**: "great, another delay, thanks a lot" reads as positive to a bag of
  n-grams; the irony head helps flag such comments but is itself weak (see its F1).
- **Identity terms**: words that name groups appear far more often in the hateful training
  tweets than in benign ones, so a benign comment that mentions a group can be scored as hate.
  HatEval's test set is built to expose this, which is why every system scores low on it.
- **Profanity without offence** and **offence without profanity**: the offensive head leans on
  swear words; friendly swearing is over-flagged, polite insults are missed.
- **Rhetorical questions**: "why is your service always this bad??" has the form of a question
  but asks nothing; the question head follows the form more often than the intent.
- **Domain shift**: trained on tweets; long reviews or other languages are out of scope."""


def write_figures(
    predictions: dict[tuple[Task, str], pd.DataFrame], directory: Path, prefix: str
) -> list[Path]:
    """Confusion matrices and reliability diagrams of the official test splits, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    tests = [
        (task, source)
        for task, source, split in EVALUATIONS
        if split == "test" and source.startswith("tweeteval")
    ]
    tests.append((Task.QUESTION, "brand_comments"))
    tests = [key for key in tests if key in predictions]
    paths = []
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    for ax, key in zip(axes.flat, tests, strict=False):
        frame = predictions[key]
        labels = list(LABELS[key[0]])
        matrix = pd.crosstab(frame["gold"], frame["predicted"]).reindex(
            index=labels, columns=labels, fill_value=0
        )
        ax.imshow(matrix.to_numpy(), cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for (i, j), value in np.ndenumerate(matrix.to_numpy()):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=9)
        ax.set_title(f"{key[0]} ({key[1]})")
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
    fig.tight_layout()
    paths.append(directory / f"{prefix}-confusion.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    edges = np.linspace(0, 1, 11)
    for ax, key in zip(axes.flat, tests, strict=False):
        frame = predictions[key]
        ax.set_title(f"{key[0]} ({key[1]})")
        if frame["confidence"].isna().all():
            ax.text(0.5, 0.5, "cross-validated: no confidences kept", ha="center")
            continue
        bins = np.clip(np.digitize(frame["confidence"], edges) - 1, 0, 9)
        accuracy = [
            frame["correct"][bins == b].mean() if (bins == b).any() else np.nan for b in range(10)
        ]
        ax.bar(edges[:-1] + 0.05, accuracy, width=0.09, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(directory / f"{prefix}-reliability.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)
    return paths


def _parity_section(parity: pd.DataFrame | None) -> str:
    if parity is None:
        return ""
    return f"""## int8 ONNX against PyTorch (same model, same rows)
Label agreement and the official metric of the served int8 runtime beside the PyTorch runtime
of the same weights (`--parity`).

{markdown_table(parity)}

"""


def _refitted_tasks(manifest: Manifest) -> set[str]:
    if adapted := manifest.config.get("feedback", {}).get("adapted"):
        # Every task is compared after adapting; only these learned (one name before 0.6).
        return {adapted} if isinstance(adapted, str) else set(adapted)
    # Feedback metrics are keyed task/set/when.
    return {key.split("/")[0] for key in manifest.metrics.get("feedback", {})} | {
        key.split("/")[0] for key in manifest.metrics.get(CROSS_VALIDATED, {})
    }


def _question_sentence(
    cross_validated: Sequence[tuple[Task, str, float, float]], refitted: bool
) -> str:
    weak = (
        "The question task has no public benchmark: its head learns from weak labels (spaCy "
        "rules over the unlabelled brand comments)"
    )
    if not cross_validated:
        if refitted:
            return f"{weak} and, in this version, from moderator decisions too (see the manifest)."
        return f"{weak} and never sees brand_comments dev."
    rows = "; ".join(
        f"{task.value} on `{dataset}`: {100 * out:.1f} cross-validated, {100 * inside:.1f} in-sample"
        for task, dataset, inside, out in cross_validated
    )
    tasks = ", ".join(sorted({task.value for task, *_ in cross_validated}))
    return (
        f"{weak}. This version also learned from brand_comments dev's "
        f"labels ({tasks}; the data README allows it for the question head). For a set the "
        "model was fitted on, the figure and "
        "confusion matrix below are out-of-fold: each fold of the set decided by a model "
        "retrained without it (`commentdesk train --feedback FILE --folds K`, computed with the PyTorch "
        f"runtime of the same weights), never the in-sample figure ({rows})."
    )


def build_model_card(
    path: Path,
    scorer: Scorer,
    table: pd.DataFrame,
    predictions: dict[tuple[Task, str], pd.DataFrame],
    catalog: Catalog,
    command: str = "commentdesk evaluate",
    parity: pd.DataFrame | None = None,
    cross_validated: Sequence[tuple[Task, str, float, float]] = (),
) -> None:
    details = [
        f"- name: `{scorer.name}`, version `{scorer.version}`; figures below from the "
        f"`{type(scorer).__name__}` runtime (the one that serves it)"
    ]
    manifest = getattr(scorer, "manifest", None)
    refitted = None
    if isinstance(manifest, Manifest):
        details.append(f"- kind: `{manifest.kind}`, created {manifest.created}")
        if manifest.base_encoder is not None:
            details.append(
                f"- base encoder: `{manifest.base_encoder.name}` (sha256 `{manifest.base_encoder.sha256[:16]}…`), network {manifest.network}"
            )
            temperatures = ", ".join(
                f"{t}: {s.temperature:.2f}"
                + (f" (bias {' / '.join(f'{b:+.2f}' for b in s.bias)})" if s.bias else "")
                for t, s in manifest.tasks.items()
            )
            details.append(
                "- temperatures, and per-label biases where they lower the cross-validated "
                f"validation loss (fitted on validation splits): {temperatures}"
            )
        thresholds = ", ".join(
            f"{task}: {spec.threshold:.3f}"
            for task, spec in manifest.tasks.items()
            if spec.threshold is not None
        )
        details.append(
            f"- thresholds (chosen on validation splits, stored in the manifest): {thresholds}"
        )
        details.append(f"- library versions: {manifest.library_versions}")
        if manifest.onnx is not None:
            details.append(f"- int8 ONNX export: {manifest.onnx.quantization}")
        seconds = manifest.metrics.get("training", {}).get("seconds")
        refitted = manifest.config.get("feedback")
        if refitted and refitted.get("encoder_steps"):
            details.append(
                f"- encoder adapted from `{refitted['base']}` by `commentdesk train --feedback` "
                f"for {', '.join(sorted(_refitted_tasks(manifest)))}: "
                f"{refitted['encoder_steps']} steps of LoRA training "
                "on its decisions and weak labels while the other heads' outputs were distilled "
                "from the base model; those heads recalibrated on their validation splits"
            )
        elif refitted:
            details.append(
                f"- heads fitted again from `{refitted['base']}` by `commentdesk train "
                "--feedback` (encoder, adapters and the other heads unchanged): "
                + ", ".join(sorted(_refitted_tasks(manifest)))
            )
        if recalibrated := manifest.config.get("recalibrated"):
            details.append(
                f"- calibration fitted again from `{recalibrated}` by `commentdesk recalibrate` "
                "(weights and ONNX export unchanged)"
            )
        if seconds is not None:
            details.append(
                f"- {'its base ' if refitted else ''}rebuilt by "
                f"`commentdesk train --config {_config_file(manifest)}`: "
                f"{seconds:.0f} s of training on the machine that built it, data loading included"
            )
    removed = ", ".join(f"{source} {count}" for source, count in sorted(catalog.removed.items()))
    figure_paths = write_figures(predictions, path.parent / "figures", scorer.name)
    figures = "\n".join(f"![{p.stem}](figures/{p.name})" for p in figure_paths)
    text = f"""# Model card: {scorer.name}

Generated by `{command}` on
{datetime.now(UTC).date().isoformat()}; every number below is measured by that command on the
data directory, with the same evaluation code for every system.

## Model
{chr(10).join(details)}

## Results (official metric per task, in percent)
The TweetEval rows are the official test splits; `brand_comments/dev` is the in-domain check
(customer comments to brands); `davidson/test` is our fixed seeded split; `sst2/test` compares
the negative and positive probabilities only (no neutral class there). VADER and
alt-profanity-check are run by the same code on the same rows. {_question_sentence(cross_validated, bool(refitted))}
alt-profanity-check was trained on data that includes Davidson et al.'s tweets, so its
`davidson/test` figure is not a fair comparison.

{markdown_table(table)}

{_parity_section(parity)}## Calibration (top-label expected calibration error on the test splits, 15 bins)
{markdown_table(calibration_table(predictions))}

## Confusion matrices
{confusion_markdown(predictions)}

{figures}

## Data
{LICENCES}

Leakage cleaning removed these training rows because their normalised text matches an
evaluation row: {removed}. `commentdesk data check` prints the full overlap table (0 after cleaning).

{INTENDED_USE}
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
