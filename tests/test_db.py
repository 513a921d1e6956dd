"""The store: Alembic migrations and at-most-once turn persistence, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlmodel import Session, func, select

from db import crud
from db.engine import get_engine
from db.migrate import alembic_config, upgrade
from db.models import Candidate, Conversation, Review, Turn, TurnResult, TurnResultBase

TABLES = {"conversation", "turn", "candidate", "review", "turn_result", "alembic_version"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def database(request, tmp_path) -> str:
    url = (
        f"sqlite:///{tmp_path / 'store.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    upgrade(url)
    upgrade(url)  # a second upgrade is a no-op
    return url


def _conversation(session: Session) -> str:
    conversation_id = uuid.uuid4().hex
    crud.create_conversation(
        session=session,
        conversation=Conversation(id=conversation_id, committee="c", method="peer", n_turns=1),
        turns=[Turn(conversation_id=conversation_id, turn_index=0, question="q?", gold=["a"])],
    )
    return conversation_id


def _turn(conversation_id: str, answer: str = "a") -> dict:
    return {
        "result": TurnResultBase(
            conversation_id=conversation_id,
            turn_index=0,
            answer=answer,
            chosen="m0",
            status="ok",
            method="peer",
            scores={"m0": 1.0, "m1": 0.0},
        ),
        "candidates": [
            Candidate(conversation_id=conversation_id, turn_index=0, member=m, text=m) for m in ("m0", "m1")
        ],
        "reviews": [
            Review(
                conversation_id=conversation_id,
                turn_index=0,
                reviewer="m0",
                method="likelihood",
                status="scored",
                ranking=["m0", "m1"],
                shown_order=["m1", "m0"],
            )
        ],
    }


def test_migrations_create_every_table(database):
    assert set(inspect(get_engine(database)).get_table_names()) >= TABLES


def test_a_turn_is_stored_once_even_when_saved_twice(database):
    engine = get_engine(database)
    with Session(engine) as session:
        conversation_id = _conversation(session)
        first, created = crud.save_turn(session=session, **_turn(conversation_id))
        again, created_again = crud.save_turn(session=session, **_turn(conversation_id, answer="other"))

        assert (created, created_again) == (True, False)
        assert again.answer == "a" and again.scores == {"m0": 1.0, "m1": 0.0}
        for table in (TurnResult, Candidate, Review):
            count = select(func.count()).select_from(table).where(table.conversation_id == conversation_id)
            assert session.exec(count).one() == {TurnResult: 1, Candidate: 2, Review: 1}[table]


def test_turn_progress_is_the_attempt_and_then_the_stored_result(database):
    engine = get_engine(database)
    with Session(engine) as session:
        conversation_id = _conversation(session)
        running = crud.turn_progress(session=session, conversation_id=conversation_id, turn_index=0)
        crud.save_turn(session=session, **_turn(conversation_id))
        done = crud.turn_progress(session=session, conversation_id=conversation_id, turn_index=0)
        missing = crud.turn_progress(session=session, conversation_id=conversation_id, turn_index=1)

    assert running == (0, None)  # stored, not sent yet (the client sends attempt 1)
    assert done is not None and done[0] == 0 and done[1] is not None
    assert (done[1].answer, done[1].scores) == ("a", {"m0": 1.0, "m1": 0.0})
    assert missing is None


@pytest.mark.services
def test_concurrent_deliveries_store_one_result(postgres_url):
    # Given: eight deliveries of the same aggregate task racing to store the turn
    upgrade(postgres_url)
    engine = get_engine(postgres_url)
    with Session(engine) as session:
        conversation_id = _conversation(session)
    outcomes: list[bool] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        with Session(engine) as session:
            barrier.wait()
            outcomes.append(crud.save_turn(session=session, **_turn(conversation_id))[1])

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then: exactly one created the rows; the others returned the stored result
    assert sorted(outcomes) == [False] * 7 + [True]
    with Session(engine) as session:
        assert len(crud.list_results(session=session, conversation_id=conversation_id)) == 1
        assert len(crud.list_candidates(session=session, conversation_id=conversation_id)) == 2


def test_reviews_stored_before_voter_groups_read_as_cast_for_their_reviewer(database):
    # Given: a review row written by the schema before 0006 (no voters column), then the upgrade
    engine = get_engine(database)
    with Session(engine) as session:
        conversation_id = _conversation(session)
    command.downgrade(alembic_config(database), "0005")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO review (conversation_id, turn_index, reviewer, method, status, ranking,"
                " shown_order, seed, raw, seconds) VALUES (:c, 0, 'm0', 'likelihood', 'scored',"
                ' \'["m1", "m0"]\', \'["m0", "m1"]\', 7, \'\', 0.5)'
            ),
            {"c": conversation_id},
        )
    upgrade(database)

    # When it is read back, and a group's row is stored beside it
    with Session(engine) as session:
        (old,) = crud.list_reviews(session=session, conversation_id=conversation_id)
        turn = _turn(conversation_id)
        turn["reviews"][0].voters = ["m0", "m1"]
        turn["reviews"][0].turn_index = 1
        session.add(turn["reviews"][0])
        session.commit()
        new = crud.list_reviews(session=session, conversation_id=conversation_id)[1]

    # Then: the old row is cast for its reviewer alone; the new one lists its voter group
    assert (old.voters, old.cast_for, old.ranking) == ([], ["m0"], ["m1", "m0"])
    assert (new.voters, new.cast_for) == (["m0", "m1"], ["m0", "m1"])
