"""The FastAPI app factory; the model is loaded in the lifespan, never at import."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from commentdesk.settings import Settings
from model.errors import ArtifactError
from model.scorer import Embedder, Scorer, load_scorer
from service.auth import KeyCache
from service.batch_jobs import BatchWorker
from service.batching import MicroBatcher
from service.db.engine import make_engine, make_sessionmaker, upgrade
from service.errors import install_error_handlers
from service.headers import SecurityHeaders
from service.limits import BodySizeLimit
from service.logs import RedactApiKeys
from service.metrics import Metrics, RequestObserver
from service.perspective import LanguageDetector
from service.policy import load_policy
from service.ratelimit import RateLimiter
from service.replies import ReplySuggester
from service.routes import admin, batches, comments, health, perspective, queue, score, templates
from service.ui.routes import install_ui

logger = logging.getLogger(__name__)


class ModelNotServable(RuntimeError):
    """Start-up refused: the model cannot be loaded and ``server.require_model`` is on."""


def embedder_factory(settings: Settings, scorer: Scorer | None) -> Callable[[], Embedder]:
    """Reply similarity reuses the ONNX model's own sentence embedding when it serves; otherwise
    the pinned MiniLM through PyTorch, loaded on first use."""
    if isinstance(scorer, Embedder) and settings.replies.encoder_dir is None:
        return lambda: scorer

    def pinned() -> Embedder:
        from model.embeddings import SentenceEmbedder

        return SentenceEmbedder(settings.replies.encoder_dir, settings.replies.encoder_sha256)

    return pinned


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    access_log = logging.getLogger("uvicorn.access")  # when run by plain uvicorn
    if not any(isinstance(f, RedactApiKeys) for f in access_log.filters):
        access_log.addFilter(RedactApiKeys())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.scorer = None
        app.state.load_error = None
        url = settings.database_url()
        if settings.database.auto_migrate:
            upgrade(url)
        engine = make_engine(url)
        app.state.sessions = make_sessionmaker(engine)
        app.state.key_cache = KeyCache(settings.api.key_cache_seconds)
        app.state.rate_limiter = RateLimiter(
            settings.api.rate_limit_per_second, settings.api.rate_limit_burst
        )
        metrics.watch_database(app.state.sessions)
        app.state.policy = load_policy(settings.policy_file)
        scoring = settings.scoring
        try:
            app.state.scorer = load_scorer(
                settings.model_dir, runtime=scoring.runtime, threads=scoring.threads
            )
        except ArtifactError as exc:
            app.state.load_error = str(exc)
            if settings.server.require_model:
                engine.dispose()
                raise ModelNotServable(
                    f"the model in {settings.model_dir} cannot be loaded: {exc}"
                ) from exc
            # Stay up so /readyz can say why; scoring answers 503 until a valid model is there.
            logger.error("model not loaded: %s", exc)
        app.state.language_detector = LanguageDetector()
        app.state.suggester = ReplySuggester(embedder_factory(settings, app.state.scorer))
        app.state.batcher = MicroBatcher(
            app.state.scorer,
            max_wait_s=scoring.micro_batch_wait_ms / 1000,
            max_batch=scoring.micro_batch_max,
            deadline_s=scoring.deadline_ms / 1000,
            on_call=metrics.observe_model_call,
        )
        app.state.batcher.start()
        app.state.batch_worker = None
        if settings.batch.worker and app.state.scorer is not None:
            app.state.batch_worker = BatchWorker(
                app.state.sessions,
                app.state.scorer,
                max_chars=settings.api.max_chars,
                chunk_rows=settings.batch.chunk_rows,
                poll_seconds=settings.batch.poll_seconds,
            )
            app.state.batch_worker.start()
        # The start-up objects (modules, the model, the routes) live as long as the process, so
        # full collections need not traverse them: freezing them cut the latency's long tail
        # (p99 at concurrency 32 from 135-141 to 82-86 ms, docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()
        if app.state.batch_worker is not None:
            await run_in_threadpool(app.state.batch_worker.stop)
        await app.state.batcher.stop()
        engine.dispose()

    app = FastAPI(
        title="commentdesk",
        version="0.1.0",
        summary="Comment moderation and sentiment: toxicity, sentiment and needs-reply in one call.",
        lifespan=lifespan,
        # Off, FastAPI no longer looks up the OpenTelemetry providers on every request.
        telemetry=None
        if settings.server.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    metrics = app.state.metrics = Metrics()
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-Goog-Api-Key"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.api.max_body_bytes,
        per_path={"/v1/batches": settings.batch.max_upload_bytes},
    )
    app.add_middleware(SecurityHeaders)
    # Outermost: every answer, the middlewares' own 413s included, is timed, logged and has an id.
    app.add_middleware(RequestObserver, metrics=metrics, access_log=settings.server.access_log)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(score.router)
    app.include_router(comments.router)
    app.include_router(queue.router)
    app.include_router(admin.router)
    app.include_router(templates.router)
    app.include_router(batches.router)
    app.include_router(perspective.router)
    if settings.server.metrics:
        app.include_router(health.metrics_router)
    install_ui(app)
    return app
