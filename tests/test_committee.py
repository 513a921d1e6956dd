"""Committee configuration: the default committee, validation errors, loading files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.committee import Committee, committee_from_dict, default_committee, load_committee
from pipeline.errors import ConfigError


def _member(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "backend": "transformers", "model": "echo", **extra}


def _config(**extra: Any) -> dict[str, Any]:
    return {"name": "tiny", "members": [_member("alpha"), _member("beta")], **extra}


# --- the default committee -------------------------------------------------------------------


def test_default_committee_is_valid() -> None:
    committee = default_committee()

    names = [m.name for m in committee.members]
    assert len(committee.generators) >= 2
    assert len(names) == len(set(names))
    assert committee.reviewers
    assert committee.aggregator in names
    # it survives a round trip through validation (what a loaded file goes through)
    assert committee_from_dict(committee.model_dump()) == committee


def test_default_committee_queues_default_to_member_name() -> None:
    committee = default_committee()

    assert [m.queue for m in committee.members] == [f"peerblend.{m.name}" for m in committee.members]
    assert committee.queues == sorted(f"peerblend.{m.name}" for m in committee.members)


def test_explicit_queue_is_kept() -> None:
    committee = committee_from_dict(_config(members=[_member("alpha", queue="gpu0"), _member("beta")]))

    assert committee.member("alpha").queue == "gpu0"
    assert committee.member("beta").queue == "peerblend.beta"


def test_member_defaults() -> None:
    member = committee_from_dict(_config()).member("alpha")

    assert member.roles == ("generator", "reviewer")
    assert member.review_method == "likelihood"
    assert member.device == "cpu"


# --- validation errors name the bad field ----------------------------------------------------


@pytest.mark.parametrize(
    ("config", "fragments"),
    [
        (_config(members=[_member("alpha"), _member("alpha")]), ["unique", "alpha"]),
        (_config(members=[_member("alpha")]), ["at least two generators", "got 1"]),
        (
            _config(members=[_member("alpha"), _member("beta", roles=["reviewer"])]),
            ["at least two generators", "got 1"],
        ),
        (_config(members=[_member("alpha", backend="vllm"), _member("beta")]), ["members.0.backend"]),
        (
            _config(members=[_member("alpha"), _member("beta", review_method="vote")]),
            ["members.1.review_method"],
        ),
        (_config(aggregator="gamma"), ["aggregator", "'gamma'", "is not a member", "alpha, beta"]),
        (_config(colour="blue"), ["colour", "Extra inputs"]),
        (_config(members=[_member("alpha", temprature=0.1), _member("beta")]), ["members.0.temprature"]),
        (_config(members=[_member("bad name!"), _member("beta")]), ["members.0.name"]),
        (_config(top_k=0), ["top_k"]),
    ],
    ids=[
        "duplicate-names",
        "one-generator",
        "one-generator-one-reviewer",
        "unknown-backend",
        "unknown-review-method",
        "aggregator-not-member",
        "unknown-top-level-key",
        "unknown-member-key",
        "bad-member-name",
        "top-k-zero",
    ],
)
def test_invalid_config_names_the_problem(config: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        committee_from_dict(config, where="my-committee.toml")

    message = str(raised.value)
    assert message.startswith("my-committee.toml: ")
    for fragment in fragments:
        assert fragment in message


def test_not_a_mapping_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="committee: "):
        committee_from_dict(["alpha", "beta"])


def test_member_lookup_unknown_name_lists_the_members() -> None:
    committee = committee_from_dict(_config())

    with pytest.raises(ConfigError) as raised:
        committee.member("gamma")

    message = str(raised.value)
    assert "'gamma'" in message
    assert "alpha, beta" in message
    assert "'tiny'" in message


# --- loading files ---------------------------------------------------------------------------

TOML = """
name = "tiny"
aggregator = "alpha"
top_k = 2

[[members]]
name = "alpha"
backend = "transformers"
model = "echo"

[[members]]
name = "beta"
backend = "transformers"
model = "echo"
queue = "gpu0"
review_method = "ranking"

[members.generation]
style = "terse"
few_shot = [{question = "Capital of France?", answer = "Paris"}]
"""

EXPECTED = {
    "name": "tiny",
    "aggregator": "alpha",
    "top_k": 2,
    "members": [
        {"name": "alpha", "backend": "transformers", "model": "echo"},
        {
            "name": "beta",
            "backend": "transformers",
            "model": "echo",
            "queue": "gpu0",
            "review_method": "ranking",
            "generation": {
                "style": "terse",
                "few_shot": [{"question": "Capital of France?", "answer": "Paris"}],
            },
        },
    ],
}


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("committee.toml", TOML),
        ("committee.yaml", yaml.safe_dump(EXPECTED)),
        ("committee.yml", yaml.safe_dump(EXPECTED)),
        ("committee.json", json.dumps(EXPECTED)),
    ],
)
def test_load_committee_formats_agree(tmp_path: Path, filename: str, text: str) -> None:
    path = tmp_path / filename
    path.write_text(text)

    committee = load_committee(path)

    assert committee == committee_from_dict(EXPECTED)
    assert isinstance(committee, Committee)
    beta = committee.member("beta")
    assert beta.queue == "gpu0"
    assert beta.review_method == "ranking"
    assert beta.generation.style == "terse"
    assert beta.generation.few_shot[0].answer == "Paris"
    assert committee.member("alpha").queue == "peerblend.alpha"


def test_load_committee_accepts_str_path(tmp_path: Path) -> None:
    path = tmp_path / "committee.json"
    path.write_text(json.dumps(EXPECTED))

    assert load_committee(str(path)).name == "tiny"


def test_load_committee_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "committee.ini"
    path.write_text("[committee]\n")

    with pytest.raises(ConfigError) as raised:
        load_committee(path)

    assert str(path) in str(raised.value)
    assert ".toml" in str(raised.value)


def test_load_committee_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"

    with pytest.raises(ConfigError) as raised:
        load_committee(path)

    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("broken.toml", 'name = "tiny"\n[[members]\nname = "alpha"\n'),
        ("broken.yaml", "members: [alpha, beta\n  name: : :\n"),
        ("broken.json", '{"members": [}'),
    ],
)
def test_load_committee_malformed_file_names_the_path(tmp_path: Path, filename: str, text: str) -> None:
    path = tmp_path / filename
    path.write_text(text)

    with pytest.raises(ConfigError) as raised:
        load_committee(path)

    assert str(path) in str(raised.value)
    assert "not valid" in str(raised.value)


def test_load_committee_invalid_content_names_path_and_field(tmp_path: Path) -> None:
    # Given a well-formed TOML file whose content is wrong (an unknown backend)
    path = tmp_path / "committee.toml"
    path.write_text(TOML.replace('backend = "transformers"', 'backend = "vllm"', 1))

    # Then the error names both the file and the field
    with pytest.raises(ConfigError) as raised:
        load_committee(path)

    assert str(raised.value).startswith(f"{path}: ")
    assert "members.0.backend" in str(raised.value)
