"""Bearer tokens: issued once, stored as SHA-256 hashes, each carrying a role."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import wraps

from flask import g, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin.models import ROLES, ApiToken
from db import get_session


def hash_token(token: str) -> str:
    """Return the hex SHA-256 of ``token`` (tokens are 256-bit random, so no salt is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(session: Session, role: str, now: datetime, *, agent_id: int | None = None,
                label: str = "") -> str:
    """Create a token with ``role`` and return its plain text (shown once, never stored).

    Raises ValueError for an unknown role, an agent token without an agent, or another
    role's token with one.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if role == "agent" and agent_id is None:
        raise ValueError("an agent token needs --agent NAME")
    if role != "agent" and agent_id is not None:
        raise ValueError("only agent tokens name an agent; leave out --agent")
    token = secrets.token_urlsafe(32)
    session.add(ApiToken(token_hash=hash_token(token), role=role, agent_id=agent_id, label=label,
                         created_at=now))
    session.flush()
    return token


@dataclass(frozen=True)
class Principal:
    """Who is calling the API: a role, and for an agent token the agent's id."""

    role: str
    agent_id: int | None
    token_id: int


def authenticate(session: Session, header: str | None) -> Principal | None:
    """Return the principal for an ``Authorization: Bearer …`` header, or None if invalid or revoked."""
    if not header or not header.startswith("Bearer "):
        return None
    token = header[len("Bearer "):].strip()
    if not token:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token),
                                                ApiToken.revoked_at.is_(None)))
    if row is None:
        return None
    return Principal(row.role, row.agent_id, row.id)


def require_roles(*roles: str):
    """View decorator: 401 without a valid token, 403 when its role is not in ``roles``."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            principal = authenticate(get_session(), request.headers.get("Authorization"))
            if principal is None:
                response = jsonify(error="a valid bearer token is required")
                response.status_code = 401
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
            if principal.role not in roles:
                return jsonify(error=f"role {principal.role!r} may not do this"), 403
            g.principal = principal
            return view(*args, **kwargs)

        return wrapper

    return decorator
