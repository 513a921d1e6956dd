"""The `peerblend` command: submit, show, db upgrade, and its errors."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import scripted_committee
from workers.cli import main


@pytest.fixture
def env(tmp_path, monkeypatch):
    committee = tmp_path / "committee.json"
    committee.write_text(scripted_committee(3, name="cli").model_dump_json())
    monkeypatch.setenv("PEERBLEND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PEERBLEND_COMMITTEE_FILE", str(committee))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


def test_submit_then_show(env, capsys):
    conversation = env / "conversation.json"
    conversation.write_text(json.dumps({"turns": ["Who wrote Dune?", "When?"]}))

    assert main(["submit", str(conversation)]) == 0
    out = capsys.readouterr().out
    conversation_id = re.search(r"conversation (\w{32})", out).group(1)
    assert "model" in out and "Who wrote Dune?" in out and "timings:" in out

    assert main(["show", conversation_id]) == 0
    shown = capsys.readouterr().out
    assert conversation_id in shown and "When?" in shown and "candidates" in shown


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        (json.dumps({"turns": []}), "empty"),
        (json.dumps({"turns": [3]}), "turn 1"),
    ],
)
def test_submit_refuses_a_bad_file(env, capsys, content, message):
    bad = env / "bad.json"
    bad.write_text(content)

    assert main(["submit", str(bad)]) == 2
    assert message in capsys.readouterr().out


def test_submit_refuses_a_missing_file(env, capsys):
    assert main(["submit", str(env / "nope.json")]) == 2
    assert "cannot read" in capsys.readouterr().out


def test_a_malformed_committee_file_is_named(env, capsys, monkeypatch):
    committee = env / "broken.toml"
    committee.write_text('name = "x"\n[[members]]\nname = "only-one"\nbackend = "scripted"\nmodel = "m"\n')
    monkeypatch.setenv("PEERBLEND_COMMITTEE_FILE", str(committee))
    conversation = env / "conversation.json"
    conversation.write_text(json.dumps(["q?"]))

    assert main(["submit", str(conversation)]) == 2
    out = capsys.readouterr().out
    assert "broken.toml" in out and "at least two generators" in out


def test_unknown_method_is_refused(env, capsys):
    conversation = env / "conversation.json"
    conversation.write_text(json.dumps(["q?"]))

    assert main(["submit", str(conversation), "--method", "vote"]) == 2
    assert "unknown method 'vote'" in capsys.readouterr().out


def test_db_upgrade(env, capsys):
    assert main(["db", "upgrade"]) == 0
    assert "schema at head" in capsys.readouterr().out
    assert (env / "home" / "peerblend.db").exists()
