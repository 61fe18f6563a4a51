"""API keys: random secrets shown once, stored only as salted scrypt hashes, each with a role.

A key looks like ``cdk_<prefix>_<secret>``; the prefix finds the row, the hash proves the secret.
Keys carry 256 bits of randomness, so the slow KDF is defence in depth for a leaked database, not
what keeps a key from being guessed; its cost is stored in each hash (``scrypt$<log2 N>$<hex>``)
so it can be raised later. Hashes of keys made before scrypt (plain salted SHA-256) still verify
and are rehashed with scrypt the first time the key is used. Verified keys are cached
(:class:`KeyCache`), so the KDF runs once per key per cache period, not per request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db.tables import ApiKey, utcnow


class Role(StrEnum):
    ADMIN = "admin"
    MODERATOR = "moderator"
    SCORER = "scorer"
    VIEWER = "viewer"


class Permission(StrEnum):
    SCORE = "score"  # score and ingest comments
    READ = "read"  # queue, comments, stats
    MODERATE = "moderate"  # claim and decide
    ADMIN = "admin"  # keys, policy, templates


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.MODERATOR: frozenset({Permission.READ, Permission.MODERATE}),
    Role.SCORER: frozenset({Permission.SCORE}),
    Role.VIEWER: frozenset({Permission.READ}),
}


class Unauthenticated(Exception):
    """No key, a malformed key, or an unknown or revoked key."""


class Forbidden(Exception):
    """A valid key whose role lacks the permission."""


@dataclass(frozen=True)
class Principal:
    key_id: int
    name: str
    role: Role

    def can(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]

    def require(self, permission: Permission) -> None:
        if not self.can(permission):
            raise Forbidden(f"role {self.role.value!r} may not {permission.value}")


SCRYPT_LOG2_N = 14  # 16 MiB and ~50 ms a hash on this project's 2-core reference machine
# At most this many hashes at once: a burst of new keys costs time, not 16 MiB per thread.
_HASHING = threading.BoundedSemaphore(max(1, min(4, os.cpu_count() or 1)))


def _hash(salt: str, secret: str, log2_n: int = SCRYPT_LOG2_N) -> str:
    with _HASHING:
        digest = hashlib.scrypt(
            secret.encode(), salt=salt.encode(), n=2**log2_n, r=8, p=1, maxmem=2**28, dklen=32
        )
    return f"scrypt${log2_n}${digest.hex()}"


def _verify(stored: str, salt: str, secret: str) -> bool:
    """Constant-time comparison against a scrypt hash or a legacy salted SHA-256 one."""
    if stored.startswith("scrypt$"):
        _, log2_n, _ = stored.split("$", 2)
        presented = _hash(salt, secret, int(log2_n))
    else:
        presented = hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()
    return hmac.compare_digest(stored.encode(), presented.encode())


def create_key(session: Session, name: str, role: Role) -> tuple[ApiKey, str]:
    """Store a new key and return it with its plaintext, which is never stored or shown again."""
    prefix, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    key = ApiKey(name=name, role=role.value, prefix=prefix, salt=salt, key_hash=_hash(salt, secret))
    session.add(key)
    session.commit()
    return key, f"cdk_{prefix}_{secret}"


def authenticate(session: Session, authorization: str | None) -> Principal:
    return verify_key(session, authorization)[0]


def verify_key(
    session: Session, authorization: str | None, trusted_hash: str | None = None
) -> tuple[Principal, str]:
    """The key's principal and stored hash. ``trusted_hash`` is a hash this exact token was
    verified against before (the key cache's): while the row still holds it, the slow KDF is
    skipped and only revocation is checked."""
    if not authorization:
        raise Unauthenticated("missing Authorization header: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("the Authorization header must be 'Bearer <key>'")
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "cdk":
        raise Unauthenticated("malformed API key")
    row = session.execute(
        select(
            ApiKey.id, ApiKey.name, ApiKey.role, ApiKey.salt, ApiKey.key_hash, ApiKey.revoked_at
        ).where(ApiKey.prefix == parts[1])
    ).first()
    # End the read before the deliberately slow hash: on SQLite every transaction holds the
    # write lock, and no one should wait on another client's key check.
    session.rollback()
    if row is None or (
        not (trusted_hash is not None and hmac.compare_digest(row.key_hash, trusted_hash))
        and not _verify(row.key_hash, row.salt, parts[2])
    ):
        raise Unauthenticated("unknown API key")
    if row.revoked_at is not None:
        raise Unauthenticated("this API key was revoked")
    stored: str = row.key_hash
    if not stored.startswith(f"scrypt${SCRYPT_LOG2_N}$"):  # legacy or cheaper: upgrade
        stored = _hash(row.salt, parts[2])
        session.execute(update(ApiKey).where(ApiKey.id == row.id).values(key_hash=stored))
        session.commit()
    return Principal(key_id=row.id, name=row.name, role=Role(row.role)), stored


def revoke_key(session: Session, key_id: int) -> bool:
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    session.commit()
    return True


class KeyCache:
    """Recently verified keys, so the hot path needs no database round trip.

    Keyed by a hash of the presented token; an entry lives ``ttl`` seconds, so a key revoked
    by another process stops working within that time (at once in the process that revoked it).
    """

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal, str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _id(authorization: str) -> str:
        return hashlib.sha256(authorization.encode()).hexdigest()

    def get(self, authorization: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(self._id(authorization))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def verified_hash(self, authorization: str) -> str | None:
        """The stored hash this token was last verified against, fresh or not."""
        with self._lock:
            entry = self._entries.get(self._id(authorization))
        return entry[2] if entry is not None else None

    def put(self, authorization: str, principal: Principal, key_hash: str = "") -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) > 10_000:  # bounded: unknown tokens are never cached anyway
                self._entries.clear()
            entry = (time.monotonic() + self.ttl, principal, key_hash)
            self._entries[self._id(authorization)] = entry

    def forget(self, key_id: int) -> None:
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if v[1].key_id != key_id}
