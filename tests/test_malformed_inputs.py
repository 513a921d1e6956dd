"""Thousands of malformed inputs: only peerblend errors, nothing stored, nothing sent.

Hypothesis throws generated junk at ``BlendClient.submit`` (conversations and run
settings), the committee loader and the dataset loaders. Every input must either be
accepted (and then stored and sent once) or refused with a ``BlendError`` subclass,
with nothing stored or sent.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, func, select

import pipeline.service.client
from db.engine import get_engine
from db.migrate import upgrade
from db.models import Conversation, Turn
from pipeline.committee import committee_from_dict
from pipeline.errors import BlendError
from pipeline.evaluation.catalog import samples_dir
from pipeline.evaluation.datasets import load_conversations
from pipeline.service.client import BlendClient
from pipeline.service.settings import Settings
from tests.conftest import scripted_committee
from workers.app import create_app
from workers.policy_store import SqlPolicyStore

EXAMPLES = 700  # per test; four tests: well over 2,000 inputs

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "q?\ud83d", "x" * 10_000, "Who wrote Dune?"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
turn_like = st.one_of(
    json_values,
    st.fixed_dictionaries({"question": json_values}, optional={"answers": json_values, "gold": json_values}),
)
conversations = st.one_of(
    json_values,
    st.lists(turn_like, max_size=5),
    st.fixed_dictionaries(
        {"turns": st.one_of(json_values, st.lists(turn_like, max_size=5))},
        optional={"id": json_values, "passage": json_values, "source": json_values},
    ),
    st.builds(lambda n: ["q?"] * n, st.integers(min_value=0, max_value=400)),
    st.builds(lambda depth: json.loads("[" * depth + "]" * depth), st.integers(min_value=1, max_value=900)),
)
methods = st.one_of(
    json_values, st.sampled_from(["peer", "pairwise", "single:m0", "single:nobody", "single:"])
)
policies = st.one_of(json_values, st.sampled_from(["full", "p1", "p2", "p3", "P1", "p4"]))
top_ks = st.one_of(json_values, st.integers(min_value=-3, max_value=6))
runs = st.one_of(json_values, st.sampled_from(["run-1", "a" * 300, "bad\nname", "ok name"]))


class Sends:
    """Stands in for the start message: records each turn that would be sent (context, run)."""

    def __init__(self) -> None:
        self.plans: list[Any] = []

    def __call__(self, *turn: Any, app: Any) -> Any:
        self.plans.append(turn)
        return self

    def apply_async(self) -> None:
        return None


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BlendClient, Sends]]:
    home = tmp_path_factory.mktemp("malformed")
    settings = Settings(home=home)
    upgrade(settings.database)
    committee = scripted_committee(3, aggregator="m0")
    app = create_app(settings, committee)
    engine = get_engine(settings.database)
    sends = Sends()
    original = pipeline.service.client.start_signature
    pipeline.service.client.start_signature = sends  # type: ignore[assignment]
    try:
        yield BlendClient(app, engine, committee, policy_store=SqlPolicyStore(engine)), sends
    finally:
        pipeline.service.client.start_signature = original


def _counts(client: BlendClient) -> tuple[int, int]:
    with Session(client.store.engine) as session:
        conversations = session.exec(select(func.count()).select_from(Conversation)).one()
        turns = session.exec(select(func.count()).select_from(Turn)).one()
    return conversations, turns


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(conversation=conversations, method=methods, policy=policies, top_k=top_ks, run=runs)
def test_submit_accepts_or_refuses_cleanly(client, conversation, method, policy, top_k, run) -> None:
    blend, sends = client
    before, sent_before = _counts(blend), len(sends.plans)
    try:
        handle = blend.submit(conversation, method=method, policy=policy, top_k=top_k, run=run)
    except BlendError:
        assert _counts(blend) == before, "a refused input was stored"
        assert len(sends.plans) == sent_before, "a refused input was sent"
        return
    # Accepted: stored once with all its turns, sent once.
    conversations, turns = _counts(blend)
    assert conversations == before[0] + 1 and turns == before[1] + handle.n_turns
    assert len(sends.plans) == sent_before + 1


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=json_values)
def test_committee_files_refuse_junk_with_config_errors(data) -> None:
    try:
        committee_from_dict(data, test_backends=True)
    except BlendError:
        return


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    content=st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.lists(json_values.map(json.dumps), max_size=4).map(lambda lines: "\n".join(lines).encode()),
        conversations.map(lambda v: json.dumps(v).encode()),
    ),
    name=st.sampled_from(["data.json", "data.jsonl", "val_books.json"]),
)
def test_dataset_loaders_refuse_junk_with_dataset_errors(tmp_path_factory, content: bytes, name: str) -> None:
    path = tmp_path_factory.mktemp("junk") / name
    path.write_bytes(content)
    try:
        load_conversations(path)
    except BlendError:
        return


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(limit=json_values)
def test_dataset_limit_refuses_junk(limit) -> None:
    path = samples_dir() / "quac-val-sample.json"  # shipped in the package
    try:
        load_conversations(path, limit=limit)
    except BlendError:
        return


def test_deep_nesting_is_refused_cleanly_not_a_recursion_error(client) -> None:
    blend, _ = client
    deep: Any = "q?"
    for _ in range(sys.getrecursionlimit() + 100):
        deep = [deep]
    with pytest.raises(BlendError):
        blend.submit({"turns": deep})


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", 10**5000), ("top_k", 10**5000), ("top_k", 2**31), ("run", 10**5000), ("method", 10**5000)],
    ids=["id-5000-digits", "top_k-5000-digits", "top_k-2**31", "run-5000-digits", "method-5000-digits"],
)
def test_huge_numbers_are_refused_cleanly(client, field, value) -> None:
    # (hypothesis cannot print integers past 4,300 digits, so these are written out)
    blend, _ = client
    before = _counts(blend)
    conversation: dict[str, Any] = {"turns": ["q?"]}
    options: dict[str, Any] = {}
    if field == "id":
        conversation["id"] = value
    else:
        options[field] = value
    with pytest.raises(BlendError):
        blend.submit(conversation, **options)
    assert _counts(blend) == before
