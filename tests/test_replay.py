"""`peerblend replay`: interrupted part-way with Ctrl-C, then rerun: nothing duplicated, nothing missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.conftest import scripted_committee
from tests.faults_support import interruptible

ROOT = Path(__file__).resolve().parents[1]


def _dataset(path: Path, conversations: int, turns: int) -> Path:
    lines = [
        json.dumps(
            {
                "id": f"c{c}",
                "turns": [{"question": f"c{c} q{t}?", "answers": [f"a{t}"]} for t in range(turns)],
            }
        )
        for c in range(conversations)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _replay(env: dict[str, str], dataset: Path | str, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "workers.cli",
        "replay",
        str(dataset),
        "--run",
        "r",
        "--concurrency",
        "2",
        *extra,
    ]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=interruptible,  # Ctrl-C reaches it even if this test run ignores SIGINT
    )


def _counts(database: Path) -> dict[str, int]:
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        counts = {
            table: connection.execute(text(f"select count(*) from {table}")).scalar_one()
            for table in ("conversation", "turn_result", "candidate")
        }
        duplicates = connection.execute(
            text(
                "select count(*) from (select conversation_id, turn_index from turn_result "
                "group by conversation_id, turn_index having count(*) > 1)"
            )
        ).scalar_one()
    engine.dispose()
    return {**counts, "duplicates": duplicates}


def _stored_turns(database: Path) -> int:
    """Turns stored so far; 0 while the database or its schema is still being created."""
    if not database.exists():
        return 0
    try:
        return _counts(database)["turn_result"]
    except OperationalError:
        return 0


def test_an_interrupted_replay_resumes_without_duplicates(tmp_path):
    # Given: 16 conversations x 4 turns, members that take 0.15 s per call
    # (two in flight: about 10 s of work, so Ctrl-C lands well before the end)
    committee = scripted_committee(
        3, name="replay", member_options={f"m{i}": {"delay_s": 0.15} for i in range(3)}
    )
    (tmp_path / "committee.json").write_text(committee.model_dump_json())
    total = 16 * 4
    dataset = _dataset(tmp_path / "data.jsonl", conversations=16, turns=4)
    env = {
        **os.environ,
        "PEERBLEND_HOME": str(tmp_path / "home"),
        "PEERBLEND_COMMITTEE_FILE": str(tmp_path / "committee.json"),
        "COLUMNS": "120",
    }
    database = tmp_path / "home" / "peerblend.db"

    # When: the replay is interrupted with Ctrl-C once some turns are stored
    first = _replay(env, dataset)
    deadline = time.monotonic() + 120
    while _stored_turns(database) < 1:
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline, "no turn was stored within 120 s"
        time.sleep(0.05)
    seen = _stored_turns(database)
    first.send_signal(signal.SIGINT)
    first_out, _ = first.communicate(timeout=60)
    partial = _counts(database)
    assert 1 <= partial["turn_result"] < total, (
        f"the interruption came too late ({seen} turns stored when it was sent): {partial}\n{first_out}"
    )
    assert first.returncode == 130, first_out

    # and run again with the same run name
    second = _replay(env, dataset)
    out, _ = second.communicate(timeout=300)

    # Then: every turn of every conversation is stored exactly once
    assert second.returncode == 0, out
    final = _counts(database)
    assert final == {"conversation": 16, "turn_result": total, "candidate": total * 3, "duplicates": 0}
    assert "already done" in out


def test_a_malformed_dataset_enqueues_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "ok", "turns": ["q?"]}\n{"id": "broken", "turns": []}\n')
    env = {**os.environ, "PEERBLEND_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    committee = tmp_path / "committee.json"
    committee.write_text(scripted_committee(2).model_dump_json())
    env["PEERBLEND_COMMITTEE_FILE"] = str(committee)

    out, _ = _replay(env, bad).communicate(timeout=60)

    assert "bad.jsonl:2" in out
    assert not (tmp_path / "home" / "peerblend.db").exists()


@pytest.mark.parametrize("flag", [["--method", "nope"], ["--policy", "p9"]])
def test_unknown_method_or_policy_is_refused(tmp_path, flag):
    dataset = _dataset(tmp_path / "d.jsonl", 1, 1)
    committee = tmp_path / "committee.json"
    committee.write_text(scripted_committee(2).model_dump_json())
    env = {**os.environ, "PEERBLEND_HOME": str(tmp_path / "home"), "PEERBLEND_COMMITTEE_FILE": str(committee)}

    process = _replay(env, dataset, *flag)
    out, _ = process.communicate(timeout=60)

    assert process.returncode == 3 and "unknown" in out


def _named_env(tmp_path: Path) -> dict[str, str]:
    committee = tmp_path / "committee.json"
    committee.write_text(scripted_committee(2).model_dump_json())
    return {
        **os.environ,
        "PEERBLEND_HOME": str(tmp_path / "home"),
        "PEERBLEND_COMMITTEE_FILE": str(committee),
        "PEERBLEND_DATA_DIR": str(tmp_path / "data"),  # empty: nothing fetched
        "COLUMNS": "300",
    }


def test_a_dataset_name_replays_its_shipped_sample(tmp_path):
    # Given: a fresh home and an empty dataset cache (no network, no ../shared needed)
    env = _named_env(tmp_path)

    # When: the README's command replays DoQA's shipped sample by name
    process = _replay(env, "doqa-cooking:sample", "--limit", "2")
    out, _ = process.communicate(timeout=300)

    # Then: its first two conversations (3 + 4 questions) are stored, under their dataset's domain
    assert process.returncode == 0, out
    assert "2 conversations submitted" in out and "7/7 turns stored" in out
    engine = create_engine(f"sqlite:///{tmp_path / 'home' / 'peerblend.db'}")
    with engine.connect() as connection:
        sources = connection.execute(text("select distinct source from conversation")).scalars().all()
    engine.dispose()
    assert sources == ["doqa:cooking"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("coqa:dev", "coqa:dev is not in the cache"),
        ("coqa", "name a split, one of coqa:train, coqa:dev, coqa:sample"),
        ("doqa-movies:dev", "dataset doqa-movies has no split 'dev'; its splits: test"),
    ],
)
def test_a_dataset_name_not_cached_says_how_to_fetch_it_and_enqueues_nothing(tmp_path, name, message):
    env = _named_env(tmp_path)

    process = _replay(env, name)
    out, _ = process.communicate(timeout=60)

    assert process.returncode == 3, out
    assert message in " ".join(out.split()), out
    if name == "coqa:dev":
        assert "`peerblend data fetch coqa:dev`" in out and "--fetch" in out
    assert not (tmp_path / "home" / "peerblend.db").exists()
