"""The FastAPI app factory; the model is loaded in the lifespan, never at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from commentdesk.settings import Settings
from model.embeddings import SentenceEmbedder
from model.errors import ArtifactError
from model.scorer import load_scorer
from service.db.engine import make_engine, make_sessionmaker, upgrade
from service.errors import install_error_handlers
from service.limits import BodySizeLimit
from service.policy import load_policy
from service.replies import ReplySuggester
from service.routes import admin, comments, health, queue, score, templates

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.scorer = None
        app.state.load_error = None
        url = settings.database_url()
        if settings.database.auto_migrate:
            upgrade(url)
        engine = make_engine(url)
        app.state.sessions = make_sessionmaker(engine)
        app.state.policy = load_policy(settings.policy_file)
        replies = settings.replies
        app.state.suggester = ReplySuggester(
            lambda: SentenceEmbedder(replies.encoder_dir, replies.encoder_sha256)
        )
        try:
            app.state.scorer = load_scorer(settings.model_dir)
        except ArtifactError as exc:
            # Stay up so /readyz can say why; scoring answers 503 until a valid model is there.
            logger.error("model not loaded: %s", exc)
            app.state.load_error = str(exc)
        yield
        engine.dispose()

    app = FastAPI(
        title="commentdesk",
        version="0.1.0",
        summary="Comment moderation and sentiment: toxicity, sentiment and needs-reply in one call.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.api.max_body_bytes)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(score.router)
    app.include_router(comments.router)
    app.include_router(queue.router)
    app.include_router(admin.router)
    app.include_router(templates.router)
    return app
