"""Can this process reach its broker, result backend and database? Asked once, up front.

A client or CLI that cannot reach Redis or PostgreSQL should say so at once, with
the address (password masked) and the reason, instead of retrying silently or
printing a driver's traceback.
"""

from __future__ import annotations

import redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from db.engine import get_engine
from pipeline.errors import ServiceUnavailable
from pipeline.service.settings import Settings

TIMEOUT_S = 3.0


def check_services(settings: Settings) -> None:
    """Raise ServiceUnavailable naming the first service that does not answer."""
    if not settings.embedded:
        for url in dict.fromkeys([settings.broker_url or "", settings.result_backend or ""]):
            if url.startswith(("redis://", "rediss://")):
                _ping_redis(url)
    if settings.database.startswith("sqlite"):
        return  # a local file, created on first use
    try:
        with get_engine(settings.database).connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as error:
        raise ServiceUnavailable(
            f"cannot reach the database at {redact_url(settings.database)}: {reason(error)}"
        ) from None


def redact_url(url: str) -> str:
    """``url`` with its password masked, for messages and logs: redis://:***@host:6379/0.

    SQLAlchemy's parser reads Redis URLs as well as database ones. A URL it cannot read, or
    one whose host came out holding an "@" (a password with an unescaped "@", split at its
    first one), shows its scheme only: it may hold a password we cannot tell apart.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        parsed = None
    if parsed is None or "@" in (parsed.host or ""):
        return f"{url.partition('://')[0]}://***"
    return parsed.render_as_string(hide_password=True)


def _ping_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S)
    try:
        client.ping()
    except redis.RedisError as error:
        raise ServiceUnavailable(f"cannot reach Redis at {redact_url(url)}: {reason(error)}") from None
    finally:
        client.close()


def reason(error: BaseException) -> str:
    """The first line of what a driver said, without the SQL or parameters it may echo."""
    cause = getattr(error, "orig", None) or error
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return first[:300]
