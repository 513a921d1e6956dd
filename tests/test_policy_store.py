"""The policy state store on the real PostgreSQL (and SQLite): updates are atomic under contention."""

from __future__ import annotations

import threading
import uuid

import pytest

from db.engine import get_engine
from db.migrate import upgrade
from pipeline.plan import RunConfig
from pipeline.policy import PolicyState
from pipeline.shortlist import begin
from pipeline.store_keys import conversation_key, counter_key
from tests.conftest import scripted_committee
from workers.policy_store import SqlPolicyStore

pytestmark = pytest.mark.services


@pytest.fixture(params=["postgresql", "sqlite"])
def store(request, tmp_path):
    url = (
        request.getfixturevalue("postgres_url")
        if request.param == "postgresql"
        else f"sqlite:///{tmp_path / 's.db'}"
    )
    upgrade(url)
    return SqlPolicyStore(get_engine(url))


def _hammer(threads: int, work) -> None:
    barrier = threading.Barrier(threads)

    def run() -> None:
        barrier.wait()
        work()

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def test_concurrent_updates_lose_nothing(store):
    key = f"test:{uuid.uuid4().hex}"

    def add_ten() -> None:
        for _ in range(10):
            store.update(key, lambda v: {"n": (v or {}).get("n", 0) + 1})

    _hammer(8, add_ten)

    assert store.get(key) == {"n": 80}


def test_concurrent_p3_conversations_get_distinct_ordinals(store):
    # Given: twelve conversations of one committee starting at the same moment
    committee = scripted_committee(4, name=f"p3-{uuid.uuid4().hex[:6]}")
    run = RunConfig(method="peer", policy="p3")
    ids = [uuid.uuid4().hex for _ in range(12)]
    cursor = iter(ids)
    lock = threading.Lock()

    def start() -> None:
        with lock:
            conversation_id = next(cursor)
        begin(store, committee, run, conversation_id=conversation_id, n_turns=3)

    _hammer(12, start)

    # Then: the counter saw every one, and each got its own number in the cycle sequence
    assert store.get(counter_key(committee.name, "p3")) == {"count": 12}
    ordinals = sorted(
        PolicyState.from_json(store.get(conversation_key(committee.name, "p3", c))).ordinal for c in ids
    )
    assert ordinals == list(range(12))
