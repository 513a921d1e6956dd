"""The queries of live conversations: the next turn appended under a compare-and-set, the
fingerprint of the exchanges so far, and the lookup of a conversation by that fingerprint."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from db.crud import utc_now
from db.models import Conversation, Turn


def append_turn(*, session: Session, conversation_id: str, turn_index: int, question: str) -> bool:
    """Add turn ``turn_index`` of a live conversation (sent now, attempt 1); False if another
    question took that index first ((conversation, turn) is unique)."""
    try:
        session.add(
            Turn(
                conversation_id=conversation_id,
                turn_index=turn_index,
                question=question,
                attempt=1,
                sent_at=utc_now(),
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


def set_fingerprint(*, session: Session, conversation_id: str, fingerprint: str) -> None:
    session.execute(
        update(Conversation).where(col(Conversation.id) == conversation_id).values(fingerprint=fingerprint)
    )
    session.commit()


def find_conversation(*, session: Session, fingerprint: str) -> str | None:
    """The newest live conversation with this fingerprint, if any."""
    query = (
        select(Conversation.id)
        .where(col(Conversation.fingerprint) == fingerprint, col(Conversation.live).is_(True))
        .order_by(col(Conversation.created_at).desc())
    )
    return session.exec(query).first()
