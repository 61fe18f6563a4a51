"""The ``commentdesk`` command. Each command imports its layer lazily: ``serve`` never loads training."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from commentdesk.settings import Settings

app = typer.Typer(
    help="commentdesk: comment moderation and sentiment scoring.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect the labelled data sets.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
feedback_app = typer.Typer(help="Moderator decisions as training data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
templates_app = typer.Typer(help="Reply templates.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")
app.add_typer(templates_app, name="templates")

logger = logging.getLogger("commentdesk")

ModelDirOption = Annotated[
    Path | None,
    typer.Option(
        "--model-dir", "--artifact", help="Model directory (default: the committed model)."
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Labelled data directory (default: ../shared/data)."),
]


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _settings(model_dir: Path | None = None, data_dir: Path | None = None) -> Settings:
    """Settings from the environment, with the command line's options on top."""
    from pydantic import ValidationError

    from commentdesk.settings import Settings

    overrides = {"model_dir": model_dir, "data_dir": data_dir}
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        _fail(f"invalid settings: {exc}")


def _data_dir(data_dir: Path | None) -> Path:
    settings = _settings(data_dir=data_dir)
    if settings.data_dir is None:
        _fail("no data directory: pass --data-dir or set COMMENTDESK_DATA_DIR")
    return settings.data_dir


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Server processes (default 1; see docs/operations.md)."),
    ] = None,
    model_dir: ModelDirOption = None,
    require_model: Annotated[
        bool | None,
        typer.Option(
            "--require-model/--allow-no-model",
            help="Exit at start-up, saying why, when the model cannot be loaded (corrupted, "
            "malformed or mismatched); --allow-no-model stays up with /readyz answering 503.",
        ),
    ] = None,
) -> None:
    """Start the HTTP service on the embedded defaults (committed model)."""
    import uvicorn

    from service.app import create_app
    from service.logs import log_config

    # Options become settings through the environment, which worker processes read too.
    options = {
        "COMMENTDESK_SERVER__HOST": host,
        "COMMENTDESK_SERVER__PORT": port,
        "COMMENTDESK_SERVER__WORKERS": workers,
        "COMMENTDESK_MODEL_DIR": model_dir,
        "COMMENTDESK_SERVER__REQUIRE_MODEL": require_model,
    }
    os.environ.update({name: str(value) for name, value in options.items() if value is not None})
    settings = _settings()
    server = settings.server
    logs = log_config(server.log_format, server.log_level)
    logging.config.dictConfig(logs)  # before the app is built: its start-up is logged too
    common: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "access_log": False,  # the service writes its own access line (with the request id)
        "log_config": logs,
    }
    if server.workers > 1:
        # Each worker's metrics go to files that any worker merges when scraped.
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="commentdesk-metrics-")
        uvicorn.run("service.app:create_app", factory=True, workers=server.workers, **common)
        return
    application = create_app(settings)
    try:
        uvicorn.run(application, **common)
    except SystemExit as exc:  # uvicorn's exit when the start-up failed
        reason = getattr(application.state, "load_error", None)
        if reason is None:
            raise
        _fail(
            f"not serving: the model in {settings.model_dir} cannot be loaded: {reason} "
            f"(--allow-no-model or COMMENTDESK_SERVER__REQUIRE_MODEL=false stays up, not ready; "
            f"exit {exc.code})"
        )


@app.command()
def score(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT", help="Comments: .csv, .tsv, .jsonl (each maybe .gz) or .parquet."
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file; its extension sets the format (default: INPUT.scored, same format).",
        ),
    ] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Column of the comment text (default: found by name).")
    ] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Column of the comment id (default: found by name).")
    ] = None,
    errors: Annotated[
        Path | None, typer.Option(help="Where rejected rows go (default: OUTPUT.errors.jsonl).")
    ] = None,
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="Rows per chunk: one model call and one resume point.")
    ] = 2048,
    engine: Annotated[
        str, typer.Option(help="local (this process) or ray (Ray Data, pip install '.[ray]').")
    ] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start a local Ray).")
    ] = None,
    ray_workers: Annotated[int, typer.Option(min=1, help="Scoring actors for --engine ray.")] = 2,
    restart: Annotated[
        bool, typer.Option(help="Discard an unfinished earlier run instead of resuming it.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    model_dir: ModelDirOption = None,
) -> None:
    """Score every comment of an exported file, in bounded memory.

    After a crash or Ctrl-C, the same command continues after the last completed chunk.
    Exit code 1 when some rows were rejected (listed with reasons in the errors file).
    """
    from tqdm import tqdm

    from model.errors import ArtifactError
    from model.scorer import load_scorer
    from service.batch import (
        BatchInputError,
        BatchOutputError,
        Engine,
        count_rows,
        default_output,
        file_type,
        parts_dir,
        score_file,
    )

    if engine not in ("local", "ray"):
        _fail(f"unknown engine {engine!r}; use local or ray")
    settings = _settings(model_dir=model_dir)
    output = output or default_output(input_path)
    try:
        file_type(output)
        total = count_rows(input_path) if progress and input_path.is_file() else None
        scorer = load_scorer(
            settings.model_dir, runtime=settings.scoring.runtime, threads=settings.scoring.threads
        )
        batch_engine: Engine | None = None
        if engine == "ray":
            from service.batch_ray import RayEngine

            batch_engine = RayEngine(
                settings.model_dir,
                address=ray_address,
                workers=ray_workers,
                runtime=settings.scoring.runtime,
            )
        with tqdm(
            total=total, unit="rows", disable=not progress, dynamic_ncols=True, smoothing=0.05
        ) as bar:
            report = score_file(
                scorer,
                input_path,
                output,
                errors_path=errors,
                text_column=text_column,
                id_column=id_column,
                max_chars=settings.api.max_chars,
                chunk_rows=chunk_rows,
                engine=batch_engine,
                restart=restart,
                progress=bar.update,
            )
    except (BatchInputError, ArtifactError) as exc:
        _fail(str(exc))
    except BatchOutputError as exc:
        kept = parts_dir(output)
        _fail(
            f"{exc}; {input_path} is untouched and no {output.name} was written. The completed "
            f"chunks are kept in {kept}: make room, then run the same command to continue."
        )
    except OSError as exc:  # the input cannot be opened or read
        _fail(str(exc))
    resumed = (
        f", {report.chunks_resumed} chunks kept from an earlier run"
        if report.chunks_resumed
        else ""
    )
    typer.echo(
        f"scored {report.rows_scored:,} of {report.rows_read:,} rows into {output} "
        f"in {report.seconds:.1f} s ({report.rows_per_second:,.0f} rows/s{resumed}); "
        f"text column {report.text_column!r}, id column {report.id_column!r}"
    )
    for task, counts in report.label_counts.items():
        shares = ", ".join(f"{label} {count:,}" for label, count in counts.most_common())
        typer.echo(f"  {task}: {shares}")
    if report.rows_failed:
        typer.echo(
            f"{report.rows_failed:,} rows rejected (row numbers and reasons in "
            f"{errors or output.with_name(output.name + '.errors.jsonl')})",
            err=True,
        )
        raise typer.Exit(1)


@app.command()
def train(
    config: Annotated[
        Path | None, typer.Option(help="Experiment TOML, e.g. configs/baseline.toml.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config value: key.sub=value.")
    ] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Where to write the model.")] = None,
    data_dir: DataDirOption = None,
    extra_data: Annotated[
        list[Path] | None,
        typer.Option(help="Extra labelled rows (`commentdesk feedback export` files)."),
    ] = None,
    feedback: Annotated[
        Path | None,
        typer.Option(
            help="Fit the served transformer model's heads again with these decisions "
            "(`commentdesk feedback export`); options: --set feedback.replay_rows=..., "
            "--set feedback.encoder_steps=N (adapt the encoder to the decisions' tasks too), "
            "--set feedback.teacher_anchors=true (a teacher fitted on the decisions relabels "
            "rule-voted training rows)"
        ),
    ] = None,
    folds: Annotated[
        int,
        typer.Option(
            help="With --feedback: first measure the retrained model by K-fold cross-validation over "
            "the decisions (0: no), then fit them on all of them."
        ),
    ] = 0,
    version: Annotated[
        str | None, typer.Option(help="With --feedback: the new version (default: derived).")
    ] = None,
    out_of_fold: Annotated[
        Path | None,
        typer.Option(
            help="With --folds and feedback.encoder_steps: write each decision text's fold, "
            "out-of-fold probabilities of every task and embedding here (JSON lines), and each "
            "fold model's adapters beside it (FILE.fold-K.safetensors)."
        ),
    ] = None,
    model_dir: ModelDirOption = None,
) -> None:
    """Train a model from an experiment config, or a new version of one from moderator feedback."""
    import pandas as pd

    from model.errors import ArtifactError
    from training.baseline import train_baseline
    from training.catalog import DataError
    from training.config import ConfigError, load_config
    from training.feedback import load_feedback

    if (config is None) == (feedback is None):
        _fail("give either --config (train from scratch) or --feedback (a new version)")
    if feedback is None and (folds or version or out_of_fold):
        _fail(
            "--folds, --version and --out-of-fold go with --feedback "
            "(a --config sets its own version)"
        )
    try:
        if feedback is not None:
            _train_on_feedback(
                feedback, set_ or [], output_dir, data_dir, model_dir, folds, version, out_of_fold
            )
            return
        assert config is not None
        values = load_config(config, set_ or [])
        target = output_dir or Path(values["output_dir"])
        extra = pd.concat([load_feedback(p) for p in extra_data]) if extra_data else None
        trainer = values.get("trainer", "baseline")
        if trainer == "transformer":
            from training.transformer import train_transformer

            if extra is not None:
                raise ConfigError(
                    "--extra-data is for the baseline trainer; a transformer learns from "
                    "decisions with --feedback"
                )
            manifest = train_transformer(values, _data_dir(data_dir), target)
        elif trainer == "baseline":
            manifest = train_baseline(values, _data_dir(data_dir), target, extra=extra)
        else:
            raise ConfigError(f"unknown trainer {trainer!r}: use 'baseline' or 'transformer'")
    except (ConfigError, DataError, ArtifactError, ValueError, OSError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote {manifest.name} {manifest.version} to {target}")
    for task, value in manifest.metrics.get("val", {}).items():
        typer.echo(f"  {task:<10} val {value:.4f}")


def _train_on_feedback(
    path: Path,
    overrides: list[str],
    output_dir: Path | None,
    data_dir: Path | None,
    model_dir: Path | None,
    folds: int,
    version: str | None,
    out_of_fold: Path | None,
) -> None:
    from dataclasses import asdict

    from model.artifact import sha256_file
    from training.config import apply_overrides
    from training.feedback import (
        FeedbackOptions,
        FeedbackRegression,
        load_feedback,
        retrain_heads,
    )

    values = apply_overrides({"feedback": asdict(FeedbackOptions())}, overrides)
    options = FeedbackOptions(**values["feedback"])
    base = _settings(model_dir=model_dir).model_dir
    target = output_dir or base.with_name(f"{base.name}-feedback")
    rows = load_feedback(path)
    if rows.empty:
        _fail(f"{path} holds no labelled rows")
    try:
        manifest = retrain_heads(
            base,
            rows,
            _data_dir(data_dir),
            target,
            options,
            sha256_file(path),
            folds=folds,
            version=version,
            predictions_file=out_of_fold,
        )
    except FeedbackRegression as exc:
        _print_comparison(exc.report)
        _fail(f"model refused, nothing written: {exc}", code=1)
    _print_comparison(json.loads((target / "feedback-report.json").read_text(encoding="utf-8")))
    typer.echo(f"wrote {manifest.name} {manifest.version} to {target}")


def _print_comparison(report: dict[str, Any]) -> None:
    """Before / after per task and set: out-of-fold (with --folds), then the fitted heads'."""
    folded = [
        (task, {"set": name, **entry})
        for task, sets in report.get("cross_validation", {}).items()
        for name, entry in sets.items()
    ]
    compared = [
        (task, row)
        for task, entry in report.items()
        if isinstance(entry, dict) and "comparison" in entry
        for row in entry["comparison"]
    ]
    for title, rows in (("out-of-fold (each fold decided by a model retrained without it)", folded),
                        ("the retrained model", compared)):  # fmt: skip
        if rows:
            typer.echo(title)
            typer.echo(f"{'task':<10} {'set':<32} {'rows':>6} {'before':>7} {'after':>7}")
        for task, row in rows:
            typer.echo(
                f"{task:<10} {row['set']:<32} {row['rows']:>6} "
                f"{row['before']:>7.2f} {row['after']:>7.2f}"
            )


@app.command()
def recalibrate(
    model_dir: Annotated[Path, typer.Argument(help="A transformer model directory.")],
    version: Annotated[str, typer.Option(help="The new version (the probabilities change).")],
    output_dir: Annotated[
        Path | None, typer.Option(help="Where to write it (default: in place).")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Fit a transformer model's temperatures, label biases and thresholds again on the
    validation splits, as training does now; weights and ONNX export unchanged."""
    from model.errors import ArtifactError
    from training.catalog import DataError
    from training.transformer import recalibrate_model

    target = output_dir or model_dir
    try:
        manifest = recalibrate_model(model_dir, _data_dir(data_dir), target, version)
    except (ArtifactError, DataError, ValueError, OSError) as exc:
        _fail(str(exc))
    for task, spec in manifest.tasks.items():
        bias = f", bias {spec.bias}" if spec.bias is not None else ""
        typer.echo(
            f"  {task:<10} temperature {spec.temperature:.3f}{bias}, threshold {spec.threshold}"
        )
    typer.echo(f"wrote {manifest.name} {manifest.version} to {target}")


@app.command("export-onnx")
def export_onnx_command(
    model_dir: Annotated[Path, typer.Argument(help="A transformer model directory.")],
    data_dir: DataDirOption = None,
    version: Annotated[
        str | None, typer.Option(help="Record the re-exported model as this version.")
    ] = None,
) -> None:
    """Add the int8 ONNX export (served without torch) to a transformer model directory; its
    activations are measured on a sample of the model's training texts."""
    from model.artifact import read_manifest
    from model.errors import ArtifactError
    from training.catalog import DataError, load_catalog
    from training.onnx_export import export_onnx
    from training.transformer import calibration_texts, task_plans

    try:
        plans = task_plans(read_manifest(model_dir).config)
        catalog = load_catalog(_data_dir(data_dir))
        path = export_onnx(model_dir, calibration_texts(catalog, plans), version=version)
    except (ArtifactError, DataError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


@app.command()
def evaluate(
    model_dir: ModelDirOption = None,
    data_dir: DataDirOption = None,
    card: Annotated[
        Path | None, typer.Option(help="Write the model card here (e.g. docs/model-card.md).")
    ] = None,
    references: Annotated[
        bool, typer.Option(help="Also evaluate VADER and alt-profanity-check.")
    ] = True,
    compare: Annotated[
        list[Path] | None,
        typer.Option(help="Other model directories to evaluate beside it (e.g. the baseline)."),
    ] = None,
    parity: Annotated[
        bool,
        typer.Option(help="Also score with PyTorch and print label agreement and metric gaps."),
    ] = False,
    ensemble_with: Annotated[
        Path | None,
        typer.Option(
            help="Also evaluate the average of this model and the other one, weight and "
            "threshold per task fitted on the validation splits of configs/multitask.toml."
        ),
    ] = None,
) -> None:
    """Official metric per task on the test splits and brand_comments dev, beside the references."""
    from model.artifact import read_manifest
    from model.errors import ArtifactError
    from model.scorer import load_scorer
    from training.catalog import DataError, load_catalog
    from training.evaluate import (
        cross_validated_figures,
        evaluate_references,
        evaluate_scorer,
        markdown_table,
        parity_table,
        results_table,
    )
    from training.report import build_model_card

    settings = _settings(model_dir=model_dir)
    try:
        scorer = load_scorer(settings.model_dir, runtime=settings.scoring.runtime)
        others = [load_scorer(directory) for directory in compare or []]
        reference = load_scorer(settings.model_dir, runtime="torch") if parity else None
        catalog = load_catalog(_data_dir(data_dir))
    except (ArtifactError, DataError) as exc:
        _fail(str(exc))
    results, predictions = evaluate_scorer(scorer, catalog, f"{scorer.name} {scorer.version}")
    parity_rows = None
    if reference is not None:
        parity_rows = parity_table(
            (results, predictions), evaluate_scorer(reference, catalog, "pytorch reference")
        )
        typer.echo(f"{type(scorer).__name__} against TransformerScorer (PyTorch), same model:")
        typer.echo(markdown_table(parity_rows))
    # After the parity check, which compares both runtimes row by row on the same (in-sample) rows.
    cross_validated = cross_validated_figures(
        read_manifest(settings.model_dir), results, predictions
    )
    for task, dataset, in_sample, out_of_fold in cross_validated:
        typer.echo(
            f"{task.value} on {dataset}: the heads were fitted on it; reporting the "
            f"cross-validated {100 * out_of_fold:.1f} (in-sample {100 * in_sample:.1f})"
        )
    for directory, other in zip(compare or [], others, strict=True):
        other_results, other_predictions = evaluate_scorer(
            other, catalog, f"{other.name} {other.version}"
        )
        cross_validated_figures(read_manifest(directory), other_results, other_predictions)
        results += other_results
    if ensemble_with is not None:
        results += _evaluate_ensemble(scorer, ensemble_with, catalog)
    if references:
        results += evaluate_references(catalog)
    table = results_table(results)
    typer.echo(markdown_table(table))
    if card is not None:
        command = "commentdesk " + " ".join(sys.argv[1:])
        build_model_card(
            card, scorer, table, predictions, catalog, command, parity_rows, cross_validated
        )
        typer.echo(f"wrote {card}")


@app.command()
def report(
    input_: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="A scored export (from `commentdesk score`), or `database` for the service's.",
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The HTML file; plots also go to NAME_files/.")
    ] = Path("report.html"),
    time_column: Annotated[
        str | None, typer.Option(help="Column of the comment's time (default: found by name).")
    ] = None,
    source_column: Annotated[
        str | None, typer.Option(help="Column of the source or brand (default: found by name).")
    ] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Column of the comment text (default: found by name).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="From this date or ISO date-time (UTC unless it says).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Up to this date (included) or before this date-time.")
    ] = None,
    source: Annotated[str | None, typer.Option(help="Only the comments of this source.")] = None,
) -> None:
    """Analytics report: one self-contained HTML page with plots (volume, sentiment, offensive,
    questions answered, reply times, sources, top terms, examples), the same numbers as
    GET /v1/stats."""
    from service.analytics import (
        ReportInputError,
        build_report,
        load_database,
        load_export,
        make_filters,
    )
    from service.report import files_dir, write_report

    try:
        filters = make_filters(since, until, source)
        if input_ == "database":
            with _sessions(_settings())() as session:
                comments = load_database(session, filters)
        else:
            comments = load_export(Path(input_), time_column, source_column, text_column)
        numbers = build_report(comments, filters)
        write_report(numbers, output)
    except ReportInputError as exc:
        _fail(str(exc))
    except OSError as exc:  # the output cannot be written
        _fail(f"cannot write the report: {exc}")
    days = len(numbers.daily)
    typer.echo(
        f"wrote {output} ({numbers.comments:,} comments over {days} days; plots in "
        f"{files_dir(output)}/)"
    )
    for reason, count in numbers.skipped.items():
        typer.echo(f"  skipped: {count:,} ({reason})", err=True)


@app.command()
def faithfulness(
    model_dir: ModelDirOption = None,
    data_dir: DataDirOption = None,
    sample: Annotated[
        int, typer.Option(min=10, help="Comments drawn (seeded) from each task's test split.")
    ] = 400,
    k: Annotated[int, typer.Option(min=1, help="Words deleted per comment.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the sample and the random words.")] = 0,
    max_rows: Annotated[
        int | None, typer.Option(min=3, help="Model rows per explanation (default: the service's).")
    ] = None,
) -> None:
    """Explanation faithfulness: the probability drop when deleting the top-k attributed words
    against k random words, per task on its official test split."""
    from model.errors import ArtifactError
    from model.scorer import load_scorer
    from training.catalog import DataError, load_catalog
    from training.evaluate import EVALUATIONS
    from training.faithfulness import deletion_test, faithfulness_markdown

    settings = _settings(model_dir=model_dir)
    try:
        scorer = load_scorer(settings.model_dir, runtime=settings.scoring.runtime)
        catalog = load_catalog(_data_dir(data_dir))
    except (ArtifactError, DataError) as exc:
        _fail(str(exc))
    results = []
    primary: dict[Any, tuple[str, str]] = {}
    for task, source, split in EVALUATIONS:  # the first evaluation of each task is its official one
        primary.setdefault(task, (source, split))
    for task, (source, split) in primary.items():
        if task not in scorer.tasks:
            continue
        rows = catalog.select(task, split, [source])
        texts = list(rows.sample(n=min(sample, len(rows)), random_state=seed)["text"])
        budget = max_rows or settings.api.explain_max_rows
        split_name = f"{source}/{split}"
        results.append(deletion_test(scorer, texts, task, split_name, k, seed, budget))
        logger.info("%s: margin %+.3f", task.value, results[-1].margin)
    typer.echo(
        f"{scorer.name} {scorer.version} ({type(scorer).__name__}), k={k}, seed={seed}, "
        f"max rows {max_rows or settings.api.explain_max_rows}"
    )
    typer.echo(faithfulness_markdown(results, k))


def _evaluate_ensemble(scorer: Any, other_dir: Path, catalog: Any) -> list[Any]:
    from commentdesk.settings import PROJECT_ROOT
    from model.scorer import load_scorer
    from model.tasks import parse_task
    from training.config import load_config
    from training.ensemble import fit_ensemble
    from training.evaluate import calibration_table, evaluate_scorer, markdown_table

    config = load_config(PROJECT_ROOT / "configs" / "multitask.toml")
    val_sources = {
        parse_task(name): str(section.get("val_source", ""))
        for name, section in config["tasks"].items()
    }
    ensemble, report = fit_ensemble(scorer, load_scorer(other_dir), catalog, val_sources)
    typer.echo(f"{ensemble.name}: weight of {scorer.name} and validation metric per task")
    for task, values in report.items():
        typer.echo(
            f"  {task:<10} weight {values['weight']:.1f}  val {values['val_metric']:.4f} "
            f"(alone: {values['val_first_only']:.4f} / {values['val_second_only']:.4f})"
        )
    results, predictions = evaluate_scorer(ensemble, catalog, ensemble.name)
    typer.echo(markdown_table(calibration_table(predictions)))
    return results


@data_app.command("labels")
def data_labels(
    dataset: Annotated[
        str, typer.Argument(help="SOURCE/SPLIT of the catalog, e.g. brand_comments/dev.")
    ],
    task: Annotated[
        list[str], typer.Option(help="A task whose labels to write (repeat for several).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The JSONL file to write.")],
    data_dir: DataDirOption = None,
) -> None:
    """Write a data set's labels in the `commentdesk feedback export` format, so that
    `commentdesk train --feedback FILE --folds 5` can fit a model's heads on them."""
    from model.tasks import Task
    from training.catalog import DataError, load_catalog

    source, _, split = dataset.partition("/")
    try:
        chosen = [Task(name) for name in dict.fromkeys(task)]
        catalog = load_catalog(_data_dir(data_dir))
    except (ValueError, DataError) as exc:
        _fail(str(exc))
    selected = {t: catalog.select(t, split, [source]) for t in chosen}
    if empty := [t.value for t, rows in selected.items() if rows.empty]:
        _fail(f"no {', '.join(empty)} labels in {dataset}")
    with output.open("w", encoding="utf-8") as handle:
        for chosen_task, rows in selected.items():
            for text, label in zip(rows["text"], rows["label"], strict=True):
                record = {"text": text, "task": chosen_task.value, "label": label}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    counts = ", ".join(f"{len(rows)} {t.value}" for t, rows in selected.items())
    typer.echo(f"wrote {counts} labels of {dataset} to {output}")


@data_app.command("check")
def data_check(data_dir: DataDirOption = None) -> None:
    """Rows per task/split/label and the overlap between every training and evaluation set."""
    from training.catalog import DataError, load_catalog, overlap_table

    try:
        catalog = load_catalog(_data_dir(data_dir))
    except DataError as exc:
        _fail(str(exc))
    counts = catalog.examples.groupby(["task", "split", "source", "label"]).size()
    typer.echo("rows per task / split / source / label")
    typer.echo(counts.to_string())
    typer.echo("\ntraining rows removed because they match an evaluation row (normalised text)")
    for source, removed in sorted(catalog.removed.items()):
        typer.echo(f"  {source:<28} {removed}")
    overlaps = overlap_table(catalog.examples)
    typer.echo(f"\noverlap between {len(overlaps)} (training set, evaluation set) pairs")
    typer.echo(overlaps.to_string(index=False))
    total = int(overlaps["overlap"].sum())
    typer.echo(f"\ntotal overlap after cleaning: {total}")
    if total:
        raise typer.Exit(1)


def _sessions(settings: Settings) -> Any:
    from service.db.engine import make_engine, make_sessionmaker, upgrade

    url = settings.database_url()
    if settings.database.auto_migrate:
        upgrade(url)
    return make_sessionmaker(make_engine(url))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every database migration (the service also does this at start-up)."""
    from service.db.engine import upgrade

    settings = _settings()
    upgrade(settings.database_url())
    typer.echo(f"database at the latest schema: {settings.database_url()}")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, moderator, scorer or viewer.")],
    name: Annotated[str, typer.Option(help="Who or what uses the key.")] = "default",
) -> None:
    """Create an API key and print it once; only its salted hash is stored."""
    from service.auth import Role, create_key

    try:
        chosen = Role(role)
    except ValueError:
        _fail(f"unknown role {role!r}; roles: {', '.join(r.value for r in Role)}")
    with _sessions(_settings())() as session:
        key, secret = create_key(session, name, chosen)
    typer.echo(f"key {key.id} ({chosen.value}, {name}): {secret}")


@keys_app.command("list")
def keys_list() -> None:
    """List keys (id, role, name, created, revoked); secrets are never shown again."""
    from sqlalchemy import select

    from service.db.tables import ApiKey

    with _sessions(_settings())() as session:
        for key in session.scalars(select(ApiKey).order_by(ApiKey.id)):
            revoked = f" revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else ""
            typer.echo(
                f"{key.id:>4} {key.role:<10} {key.name} (created {key.created_at:%Y-%m-%d}){revoked}"
            )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="The key's id (see keys list).")],
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from service.auth import revoke_key

    with _sessions(_settings())() as session:
        if not revoke_key(session, key_id):
            _fail(f"no active key {key_id}")
    typer.echo(f"key {key_id} revoked")


@feedback_app.command("export")
def feedback_export(
    output: Annotated[Path, typer.Option("--output", "-o", help="The .jsonl file to write.")],
) -> None:
    """Write moderator decisions as labelled rows for `commentdesk train --extra-data`."""
    from service.feedback import export_feedback

    with _sessions(_settings())() as session:
        count = export_feedback(session, output)
    typer.echo(f"wrote {count} labelled rows to {output}")


@app.command()
def calibrate(
    source: Annotated[
        str | None, typer.Option(help="The source (brand, page) whose decisions to fit.")
    ] = None,
    all_sources: Annotated[
        bool,
        typer.Option(
            help="Fit on every source's decisions; applies where a source has no fit of its own."
        ),
    ] = False,
    min_labels: Annotated[
        int, typer.Option(min=2, help="Fewest labels of a task to fit it; fewer: left as is.")
    ] = 30,
    dry_run: Annotated[bool, typer.Option(help="Report the fit without storing it.")] = False,
    model_dir: ModelDirOption = None,
) -> None:
    """Fit a source's own temperatures and thresholds from its moderators' decisions.

    The overlay is stored in the database and applied at ingest to that source's comments while
    the same model is served; the report gives precision and recall before and after, on the
    decisions themselves and cross-validated.
    """
    from model.artifact import read_manifest
    from model.errors import ArtifactError
    from model.scorer import load_scorer
    from service.calibration import ALL_SOURCES, TaskOverlay, decided_labels, save_overlay
    from training.source_calibration import SourceFit, fit_source

    if (source is not None) == all_sources:
        _fail("give either --source NAME or --all-sources")
    source = ALL_SOURCES if all_sources else source
    assert source is not None
    settings = _settings(model_dir=model_dir)
    sessions = _sessions(settings)
    with sessions() as session:
        labelled = decided_labels(session, source)
    if not labelled:
        _fail(f"no moderator decisions that imply a label for source {source!r}")
    try:
        scorer = load_scorer(settings.model_dir, runtime=settings.scoring.runtime)
    except ArtifactError as exc:
        _fail(str(exc))
    scores = scorer.score([item.text for item in labelled])
    thresholds = read_manifest(settings.model_dir).thresholds()
    fitted = {}
    for task in scorer.tasks:
        rows = [i for i, item in enumerate(labelled) if task in item.labels]
        if not rows:
            continue
        fit = fit_source(
            task,
            scores.probabilities[task][rows],
            [labelled[i].labels[task] for i in rows],
            thresholds.get(task),
            min_labels=min_labels,
        )
        if isinstance(fit, SourceFit):
            fitted[task] = (
                TaskOverlay(fit.temperature, fit.threshold),
                fit.labels_used,
                fit.report,
            )
            _print_source_fit(task.value, fit.temperature, fit.threshold, fit.report)
        else:
            typer.echo(f"{task.value}: not fitted: {fit}")
    if not fitted:
        _fail(f"nothing stored for source {source!r}: no task has a fit (see above)", code=1)
    if dry_run:
        typer.echo("dry run: nothing stored")
        return
    with sessions() as session:
        save_overlay(session, source, fitted, scorer.name, scorer.version)
    typer.echo(f"stored the calibration of {source!r} for {scorer.name} {scorer.version}")


def _print_source_fit(
    task: str, temperature: float, threshold: float | None, report: dict[str, Any]
) -> None:
    counts = ", ".join(f"{label} {n}" for label, n in report["label_counts"].items())
    cut = "-" if threshold is None else f"{threshold:.3f}"
    typer.echo(
        f"{task}: {report['labels']} labels ({counts}); temperature {temperature:.3f}, threshold {cut}"
    )
    columns = [c for c in ("precision", "recall", "f1") if c in report["before"]] or ["metric"]
    typer.echo(f"  {'':<34}" + "".join(f"{c:>10}" for c in columns))
    rows = {"model's settings": "before", "fitted, on these labels": "after_in_sample"}
    rows |= {
        f"fitted, {k.split('_')[-2]}-fold cross-validated": k
        for k in report
        if k.startswith("after_cross")
    }
    for name, key in rows.items():
        typer.echo(f"  {name:<34}" + "".join(f"{report[key][c]:>10.3f}" for c in columns))


@templates_app.command("load-defaults")
def templates_load_defaults() -> None:
    """Add the default reply library (skips templates whose name already exists)."""
    from service.replies import load_defaults

    with _sessions(_settings())() as session:
        added = load_defaults(session)
    typer.echo(f"added {added} default reply templates")


def run() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()


if __name__ == "__main__":
    run()
