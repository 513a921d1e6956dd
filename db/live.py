"""The queries of live conversations: the next turn appended under a compare-and-set, the lookup
of a conversation by the fingerprint of its exchanges so far, and of a turn already asked (by the
fingerprint it was asked under and its question, or by the request's Idempotency-Key)."""

from __future__ import annotations

from sqlalchemy import delete, exists, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from db.crud import utc_now
from db.models import Conversation, Turn


def append_turn(
    *,
    session: Session,
    conversation_id: str,
    turn_index: int,
    question: str,
    history_fingerprint: str | None = None,
    request_key: str | None = None,
    max_new_tokens: int | None = None,
    stop: list[str] | None = None,
) -> bool:
    """Add turn ``turn_index`` of a live conversation (sent now, attempt 1); False if another
    question took that index first ((conversation, turn) is unique) or another request holds
    ``request_key`` (unique too)."""
    try:
        session.add(
            Turn(
                conversation_id=conversation_id,
                turn_index=turn_index,
                question=question,
                attempt=1,
                sent_at=utc_now(),
                history_fingerprint=history_fingerprint,
                request_key=request_key,
                max_new_tokens=max_new_tokens,
                stop=stop or None,
            )
        )
        session.execute(
            update(Conversation).where(col(Conversation.id) == conversation_id).values(n_turns=turn_index + 1)
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True


def delete_unasked(*, session: Session, conversation_id: str) -> bool:
    """Delete a live conversation without turns (one statement: a turn added meanwhile keeps it)."""
    has_turn = exists().where(col(Turn.conversation_id) == conversation_id)
    deleted = session.execute(
        delete(Conversation).where(
            col(Conversation.id) == conversation_id, col(Conversation.live).is_(True), ~has_turn
        )
    )
    session.commit()
    return bool(deleted.rowcount)  # type: ignore[attr-defined]


def find_conversation(*, session: Session, fingerprint: str) -> str | None:
    """The newest live conversation with this fingerprint, if any."""
    query = (
        select(Conversation.id)
        .where(col(Conversation.fingerprint) == fingerprint, col(Conversation.live).is_(True))
        .order_by(col(Conversation.created_at).desc())
    )
    return session.exec(query).first()


def find_asked(
    *, session: Session, history_fingerprint: str, question: str, conversation_id: str | None = None
) -> Turn | None:
    """The newest turn asked as ``question`` after the exchanges ``history_fingerprint`` stands for
    (in ``conversation_id`` if given), if any: what a retried request asked before."""
    query = select(Turn).where(
        col(Turn.history_fingerprint) == history_fingerprint, col(Turn.question) == question
    )
    if conversation_id is not None:
        query = query.where(col(Turn.conversation_id) == conversation_id)
    return session.exec(query.order_by(col(Turn.id).desc())).first()


def find_by_key(*, session: Session, request_key: str) -> Turn | None:
    """The turn a request with this Idempotency-Key asked, if any."""
    return session.exec(select(Turn).where(col(Turn.request_key) == request_key)).first()
