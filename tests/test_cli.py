"""The `peerblend` command: submit, show, db upgrade, and its errors."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import scripted_committee
from workers.cli import EXIT_INPUT, EXIT_UNAVAILABLE, EXIT_USAGE, main
from workers.services import redact_url


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

    assert main(["submit", str(bad)]) == EXIT_INPUT
    assert message in capsys.readouterr().err


def test_submit_refuses_a_missing_file(env, capsys):
    assert main(["submit", str(env / "nope.json")]) == EXIT_INPUT
    assert "cannot read" in capsys.readouterr().err


def test_a_malformed_committee_file_is_named(env, capsys, monkeypatch):
    committee = env / "broken.toml"
    committee.write_text('name = "x"\n[[members]]\nname = "only-one"\nbackend = "scripted"\nmodel = "m"\n')
    monkeypatch.setenv("PEERBLEND_COMMITTEE_FILE", str(committee))
    conversation = env / "conversation.json"
    conversation.write_text(json.dumps(["q?"]))

    assert main(["submit", str(conversation)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "broken.toml" in err and "at least two generators" in err


def test_unknown_method_is_refused(env, capsys):
    conversation = env / "conversation.json"
    conversation.write_text(json.dumps(["q?"]))

    assert main(["submit", str(conversation), "--method", "vote"]) == EXIT_INPUT
    assert "unknown method 'vote'" in capsys.readouterr().err


def test_db_upgrade(env, capsys):
    assert main(["db", "upgrade"]) == 0
    assert "schema at head" in capsys.readouterr().out
    assert (env / "home" / "peerblend.db").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "x.json", "--run", "r", "--concurrency", "0"],
        ["replay", "x.json", "--run", "r", "--concurrency", "-3"],
        ["replay", "x.json", "--run", "r", "--limit", "-1"],
        ["replay", "x.json", "--run", "r", "--stride", "0"],
        ["replay", "x.json", "--run", "r", "--timeout", "0"],
        ["replay", "x.json", "--run", "r", "--timeout", "nan"],
        ["submit", "x.json", "--top-k", "two"],
        ["demo", "--turns", "0"],
    ],
)
def test_bad_flags_are_usage_errors_before_anything_runs(env, capsys, argv):
    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("peerblend ")


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        (
            {
                "PEERBLEND_BROKER_URL": "redis://:s3cret@127.0.0.1:1/0",
                "PEERBLEND_RESULT_BACKEND": "redis://:s3cret@127.0.0.1:1/1",
            },
            "cannot reach Redis at redis://:***@127.0.0.1:1/0",
        ),
        (
            {"PEERBLEND_DATABASE_URL": "postgresql+psycopg://peer:s3cret@127.0.0.1:1/test"},
            "cannot reach the database at postgresql+psycopg://peer:***@127.0.0.1:1/test",
        ),
    ],
    ids=["redis", "database"],
)
def test_an_unreachable_service_is_one_line_with_the_password_masked(
    env, capsys, monkeypatch, variables, named
):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    conversation = env / "conversation.json"
    conversation.write_text(json.dumps(["q?"]))

    code = main(["submit", str(conversation)])

    err = capsys.readouterr().err
    assert code == EXIT_UNAVAILABLE
    assert named in err and "s3cret" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2


def test_a_setting_of_the_wrong_type_is_an_input_error(env, capsys, monkeypatch):
    monkeypatch.setenv("PEERBLEND_BATCH_MAX", "many")
    conversation = env / "conversation.json"
    conversation.write_text(json.dumps(["q?"]))

    assert main(["submit", str(conversation)]) == EXIT_INPUT
    assert "PEERBLEND_BATCH_MAX" in capsys.readouterr().err


def test_a_dataset_that_is_not_utf8_is_an_input_error(env, capsys):
    bad = env / "data.jsonl"
    bad.write_bytes(b"\xff\xfe{not utf-8")

    assert main(["replay", str(bad), "--run", "r"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "data.jsonl" in err and "Traceback" not in err


def test_json_output_holds_what_fetch_holds(env, capsys):
    conversation = env / "conversation.json"
    conversation.write_text(json.dumps({"turns": ["Who wrote Dune?", "When?"]}))

    assert main(["submit", str(conversation), "--json"]) == 0
    submitted = json.loads(capsys.readouterr().out)
    assert main(["show", submitted["id"], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)

    from pipeline.service.settings import Settings
    from workers.embedded import connect

    with connect(Settings()) as client:
        fetched = client.fetch(submitted["id"])
    assert shown == submitted
    assert shown["finished"] is True and len(shown["turns"]) == 2
    assert [t["question"] for t in shown["turns"]] == [t.question for t in fetched.turns]
    assert [t["result"]["answer"] for t in shown["turns"]] == [t.result["answer"] for t in fetched.turns]
    assert {c["member"] for c in shown["turns"][0]["candidates"]} == {"m0", "m1", "m2"}

    assert main(["list", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed[0]["id"] == submitted["id"] and listed[0]["stored"] == 2


def test_submit_no_wait_prints_the_id_and_resume_finishes_it(env, capsys):
    conversation = env / "conversation.json"
    conversation.write_text(json.dumps(["Who wrote Dune?"]))

    assert main(["submit", str(conversation), "--no-wait"]) == 0
    conversation_id = capsys.readouterr().out.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", conversation_id)

    assert main(["resume", conversation_id, "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["id"] == conversation_id and resumed["finished"] is True

    assert main(["list"]) == 0
    assert conversation_id in capsys.readouterr().out


def test_show_prints_the_policy_decision_and_says_when_a_turn_was_not_ranked(env, capsys):
    conversation = env / "conversation.json"
    conversation.write_text(json.dumps(["Who wrote Dune?", "When?"]))

    assert main(["submit", str(conversation), "--policy", "p2"]) == 0
    out = capsys.readouterr().out
    assert "policy: p2: odd turn, ranked" in out
    assert "not ranked (reused)" in out


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        (
            "rediss://user:s%40cret@h:6380/1?ssl_cert_reqs=none",
            "rediss://user:***@h:6380/1?ssl_cert_reqs=none",
        ),
        ("postgresql+psycopg://peer:pw@db:5432/peerblend", "postgresql+psycopg://peer:***@db:5432/peerblend"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),  # nothing to hide
        ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
        # an unescaped "@" in the password, and a URL the parser cannot read: nothing of either shown
        ("postgresql://u:p@ss@h/db", "postgresql://***"),
        ("redis+sentinel://:pw@h1:26379,h2:26379/master", "redis+sentinel://***"),
    ],
)
def test_addresses_in_messages_hide_their_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
