"""Server-side sessions of the web page: the cookie carries a random token, the database its hash.

Signing in exchanges an API key for a session, so the key itself never sits in the browser.
Each session has its own CSRF token, which every state-changing request must echo.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.auth import Principal, Role
from service.db.tables import ApiKey, UiSession


@dataclass(frozen=True)
class SignedIn:
    principal: Principal
    csrf_token: str

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented, self.csrf_token)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(
    session: Session, principal: Principal, lifetime: timedelta, now: datetime
) -> str:
    """Store a new session for ``principal`` and return the cookie token (never stored)."""
    token = secrets.token_urlsafe(32)
    session.execute(delete(UiSession).where(UiSession.expires_at <= now))
    session.add(
        UiSession(
            token_hash=_hash(token),
            key_id=principal.key_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    session.commit()
    return token


def find_session(session: Session, token: str | None, now: datetime) -> SignedIn | None:
    """The live session of ``token``; none when it is unknown, expired or its key was revoked."""
    if not token:
        return None
    row = session.execute(
        select(UiSession, ApiKey)
        .join(ApiKey, ApiKey.id == UiSession.key_id)
        .where(UiSession.token_hash == _hash(token))
    ).one_or_none()
    if row is None:
        return None
    ui_session, key = row
    if ui_session.expires_at <= now or key.revoked_at is not None:
        return None
    return SignedIn(Principal(key.id, key.name, Role(key.role)), ui_session.csrf_token)


def end_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(UiSession).where(UiSession.token_hash == _hash(token)))
        session.commit()
