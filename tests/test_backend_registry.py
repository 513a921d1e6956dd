"""The backend registry: one list of names, checked options, declared capabilities, gated test backends."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pipeline.backend import (
    BACKENDS,
    Capability,
    Message,
    Prompt,
    ScoreRequest,
    backend_info,
    backend_names,
)
from pipeline.committee import Committee, Member, committee_from_dict, load_committee
from pipeline.errors import ConfigError
from pipeline.pairwise import judge
from pipeline.records import CandidateRecord, TurnContext
from pipeline.service.settings import Settings
from tests.conftest import scripted_committee
from workers.backends.base import BackendSpec, create_backend
from workers.backends.scripted import ScriptedBackend
from workers.batching import BatchingBackend
from workers.runtime import Runtime, committee_from_settings, resident_backends

# A valid options dict per backend, so that only the bad key is wrong.
VALID_OPTIONS: dict[str, dict[str, object]] = {
    "transformers": {"batch_size": 4},
    "openai": {"base_url": "http://127.0.0.1:9/v1"},
    "cross-encoder": {},
    "scripted": {"replies": ["x"]},
}


def _committee_data(backend: str, **member: Any) -> dict[str, Any]:
    """Member "a" on ``backend`` (with extra ``member`` fields), in roles it can play, and two generators."""
    roles = ["judge"] if backend == "cross-encoder" else ["generator", "reviewer"]
    first = {"name": "a", "backend": backend, "model": "m", "roles": roles, **member}
    generators = [{"name": f"g{i}", "backend": "transformers", "model": "m"} for i in range(2)]
    return {"members": [first, *generators]}


def _prompt(text: str) -> Prompt:
    return Prompt((Message("user", text),))


# --- names -------------------------------------------------------------------------------------


def test_the_registry_is_the_one_list_of_names_and_every_factory_exists() -> None:
    assert sorted(BACKENDS) == ["cross-encoder", "openai", "scripted", "transformers"]
    assert backend_names() == ["cross-encoder", "openai", "transformers"]  # offered to users
    assert backend_names(test_backends=True) == sorted(BACKENDS)
    for info in BACKENDS.values():
        module, _, name = info.factory.partition(":")
        assert callable(getattr(importlib.import_module(module), name))


def test_an_unknown_backend_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError) as raised:
        committee_from_dict(_committee_data(backend="vllm"), where="c.toml")

    message = str(raised.value)
    assert message.startswith("c.toml: members.0.backend")
    assert "unknown backend 'vllm'" in message and "cross-encoder, openai, transformers" in message
    with pytest.raises(ConfigError, match="known backends: cross-encoder, openai, transformers"):
        create_backend("vllm", BackendSpec(model="m"))


# --- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_an_unknown_option_names_the_key_and_the_backend(backend: str) -> None:
    options = {**VALID_OPTIONS[backend], "bach_size": 8}

    with pytest.raises(ConfigError) as in_committee:
        committee_from_dict(_committee_data(backend, options=options), test_backends=True)
    with pytest.raises(ConfigError) as when_built:  # a backend built directly checks them too
        create_backend(backend, BackendSpec(model="m", options=options), test_backends=True)

    for raised in (in_committee, when_built):
        assert f"unknown option 'bach_size' for backend '{backend}'" in str(raised.value)
    assert "members.0.options" in str(in_committee.value)


@pytest.mark.parametrize(
    ("backend", "options", "key"),
    [
        ("transformers", {"batch_size": 0}, "batch_size"),
        ("transformers", {"device_map": "balanced"}, "device_map"),
        ("openai", {}, "base_url"),
        ("scripted", {"delay_s": -1}, "delay_s"),
        ("scripted", {"scores": {"Paris": "high"}}, "scores.Paris"),
    ],
)
def test_a_bad_option_value_names_the_key_and_the_backend(
    backend: str, options: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        committee_from_dict(_committee_data(backend, options=options), test_backends=True)

    assert f"option '{key}' of backend '{backend}'" in str(raised.value)


def test_valid_options_keep_the_defaults_of_the_others() -> None:
    options = backend_info("transformers").parse_options({"batch_size": 4})

    assert options.model_dump() == {
        "device_map": None,
        "batch_size": 4,
        "prefix_cache": 8,
        "prefix_cache_mb": 256,
        "cache_dir": None,
    }


def test_the_worker_cache_dir_is_given_to_the_backend_not_mixed_into_its_options(tmp_path: Path) -> None:
    # Given an openai member, whose options have no cache_dir (the runtime used to add one to all)
    data = _committee_data("openai", options={"base_url": "http://127.0.0.1:9/v1"})
    committee = committee_from_dict(data)
    runtime = Runtime(Settings(home=tmp_path, model_cache_dir=tmp_path / "models"), committee)

    # When the runtime builds it, Then it is built (no unknown "cache_dir" option)
    built: Any = runtime.backend(committee.member("a"))

    assert built.options.base_url == "http://127.0.0.1:9/v1"
    built.close()


# --- the test backend --------------------------------------------------------------------------


def test_the_scripted_backend_is_refused_without_the_flag(tmp_path: Path) -> None:
    data = _committee_data("scripted")
    path = tmp_path / "committee.json"
    path.write_text(Committee.model_validate(data).model_dump_json())

    with pytest.raises(ConfigError) as from_dict:
        committee_from_dict(data, where="c.toml")
    with pytest.raises(ConfigError) as from_file:
        load_committee(path)
    with pytest.raises(ConfigError) as from_runtime:  # a committee built in code
        Runtime(Settings(home=tmp_path, test_backends=False), scripted_committee(2))
    with pytest.raises(ConfigError) as when_built:
        create_backend("scripted", BackendSpec(model="m"))

    for raised in (from_dict, from_file, from_runtime, when_built):
        message = str(raised.value)
        assert "'scripted' is a test backend" in message and "PEERBLEND_TEST_BACKENDS=1" in message
    assert str(from_dict.value).startswith("c.toml: members.0.backend (a): ")


def test_the_scripted_backend_is_accepted_with_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _committee_data("scripted")
    path = tmp_path / "committee.json"
    path.write_text(Committee.model_validate(data).model_dump_json())

    assert committee_from_dict(data, test_backends=True).member("a").backend == "scripted"
    assert isinstance(create_backend("scripted", BackendSpec(model="m"), test_backends=True), ScriptedBackend)
    # And the flag comes from the environment at the edges (Settings), as the test suite sets it
    monkeypatch.setenv("PEERBLEND_TEST_BACKENDS", "1")
    monkeypatch.setenv("PEERBLEND_COMMITTEE_FILE", str(path))
    assert committee_from_settings(Settings(home=tmp_path)).member("a").backend == "scripted"
    monkeypatch.setenv("PEERBLEND_TEST_BACKENDS", "0")
    with pytest.raises(ConfigError, match="PEERBLEND_TEST_BACKENDS=1"):
        committee_from_settings(Settings(home=tmp_path))


def test_settings_keep_test_backends_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEERBLEND_TEST_BACKENDS")

    assert Settings().test_backends is False


# --- capabilities ------------------------------------------------------------------------------


def test_capabilities_are_as_declared() -> None:
    caps = {name: info.capabilities for name, info in BACKENDS.items()}

    assert caps == {
        "transformers": {
            Capability.GENERATE,
            Capability.SCORE,
            Capability.BATCH,
            Capability.WARM_UP,
            Capability.BALLOT,
        },
        "openai": {Capability.GENERATE, Capability.SCORE, Capability.BALLOT},
        "cross-encoder": {Capability.COMPARE},
        "scripted": {Capability.GENERATE, Capability.SCORE},
    }
    assert [info.name for info in BACKENDS.values() if info.test_only] == ["scripted"]


def test_the_scripted_batch_option_switches_batching_on() -> None:
    batched, direct = scripted_committee(2, member_options={"m0": {"batch": True}}).members

    assert Capability.BATCH in batched.capabilities
    assert Capability.BATCH not in direct.capabilities


def test_the_scripted_ballot_option_declares_ballots() -> None:
    ballots, plain = scripted_committee(2, member_options={"m0": {"ballot": "constrained"}}).members

    assert Capability.BALLOT in ballots.capabilities
    assert Capability.BALLOT not in plain.capabilities


@pytest.mark.parametrize(
    ("roles", "review_method", "fragment"),
    [
        (("generator",), "likelihood", "role 'generator' needs a backend that can generate"),
        (("reviewer",), "likelihood", "role 'reviewer' needs a backend that can score"),
        (("reviewer",), "ranking", "role 'reviewer' needs a backend that can generate"),
        (("aggregator",), "likelihood", "role 'aggregator' needs a backend that can generate"),
    ],
)
def test_a_member_cannot_take_a_role_its_backend_cannot_play(
    roles: tuple[str, ...], review_method: str, fragment: str
) -> None:
    with pytest.raises(ValueError) as raised:
        Member(name="j", backend="cross-encoder", model="m", roles=roles, review_method=review_method)  # type: ignore[arg-type]

    assert fragment in str(raised.value) and "backend 'cross-encoder' can compare" in str(raised.value)


class PairJudgeAndScorer:
    """Has both ``compare`` and ``score``: which one the judge stage uses is the member's declaration."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def compare(self, context: str, first: str, second: str) -> float:
        self.asked.append("compare")
        return 0.9

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        self.asked.append("score")
        return [-0.1, -2.0]

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        raise AssertionError("a judge does not generate")


@pytest.mark.parametrize(("backend", "asked"), [("cross-encoder", "compare"), ("transformers", "score")])
def test_the_judge_stage_compares_only_with_a_backend_declared_to(backend: str, asked: str) -> None:
    judge_member = Member(name="j", backend=backend, model="m", roles=("judge",))
    generators = tuple(Member(name=f"g{i}", backend="transformers", model="m") for i in range(2))
    committee = Committee(members=(*generators, judge_member), pairwise_judge="j")
    candidates = (CandidateRecord("g0", "Paris"), CandidateRecord("g1", "Lyon"))
    fake = PairJudgeAndScorer()

    result = judge(fake, judge_member, committee, TurnContext("c", 0, "Capital?"), candidates, ("g0", "g1"))

    assert fake.asked == [asked]
    assert result.error is None and result.p_first is not None


# --- call logs ---------------------------------------------------------------------------------


def test_each_scripted_backend_keeps_its_own_call_log() -> None:
    first = ScriptedBackend(BackendSpec(model="one"))
    second = ScriptedBackend(BackendSpec(model="two"))

    first.generate([_prompt("q1?")])
    second.score([ScoreRequest(_prompt("q2?"), "a")])

    assert [(m, kind) for m, kind, _ in first.calls] == [("one", "generate")]
    assert second.calls == [("two", "score", ["a"])]


def test_the_runtime_lists_its_scripted_backends_unwrapped_from_their_batchers(tmp_path: Path) -> None:
    committee = scripted_committee(2, name="logs", member_options={"m0": {"batch": True, "delay_s": 0.001}})
    runtime = Runtime(Settings(home=tmp_path, batch_max=4), committee)
    batched, direct = (runtime.backend(m) for m in committee.members)
    assert isinstance(batched, BatchingBackend) and isinstance(direct, ScriptedBackend)

    batched.generate([_prompt("to m0?")])

    resident = resident_backends()
    assert batched.inner in resident and direct in resident
    inner: Any = batched.inner
    assert [p.messages[-1].content for _, _, p in inner.calls] == ["to m0?"]
    assert direct.calls == []
