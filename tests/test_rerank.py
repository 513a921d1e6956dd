"""`peerblend calibrate` and `peerblend rerank` on a small stored run made by a scripted committee."""

from __future__ import annotations

import json
import uuid

import pytest

from pipeline.errors import InputError
from pipeline.evaluation.rerank import Calibrated, Rule, rerank
from pipeline.records import review_from_row
from pipeline.service.client import BlendClient
from pipeline.service.settings import Settings
from pipeline.store_keys import calibration_key, learned_key, prior_key
from pipeline.weights import stored_weights
from tests.conftest import scripted_committee
from workers import cli
from workers.evaluation.calibration import calibrate_run
from workers.evaluation.rerank import rerank_run

# m0 always answers the gold "paris" but, reviewing, prefers "rome"; m2 answers "london" and prefers
# "paris"; m1 answers "rome" and ranks by free text (the scripted default: the labels reversed).
OPTIONS = {
    "m0": {"replies": ["paris"], "scores": {"rome": -0.1}},
    "m1": {"replies": ["rome"]},
    "m2": {"replies": ["london"], "scores": {"paris": -0.1}},
}
COMMITTEE = scripted_committee(3, name="rerank", member_options=OPTIONS)


def _stored_run(client: BlendClient, *, method: str = "peer") -> str:
    run = f"r-{uuid.uuid4().hex[:8]}"
    for c in range(3):
        conversation = {
            "id": f"c{c}",
            "source": "jsonl",
            "turns": [{"question": f"c{c} q{t}?", "answers": ["Paris"]} for t in range(2)],
        }
        client.submit(conversation, method=method, run=run).wait(timeout=30)
    return run


def _settings(client: BlendClient) -> Settings:
    return Settings(database_url=client.store.engine.url.render_as_string(hide_password=False))


@pytest.fixture
def stored(embedded) -> tuple[BlendClient, str]:
    client = embedded(COMMITTEE)
    return client, _stored_run(client)


def test_the_live_rule_reranked_changes_nothing(stored) -> None:
    client, run = stored

    done = rerank_run(_settings(client), COMMITTEE, run, Rule("borda", "uniform"))

    assert len(done.stored) == 6
    assert done.changed == 0
    assert [r["answer"] for r in done.reranked] == [r["answer"] for r in done.stored]


def test_calibration_fits_the_prior_and_rules_that_use_it_pick_the_good_member(stored) -> None:
    client, run = stored
    settings = _settings(client)

    fitted = calibrate_run(settings, COMMITTEE, run).calibration
    by_prior = rerank_run(settings, COMMITTEE, run, Rule("prior"))
    by_trust = rerank_run(settings, COMMITTEE, run, Rule("borda", "calibrated"))

    # Then: the prior knows m0 is right, m2's ballots are the trustworthy ones, m0's are not
    assert fitted.prior["no_passage"]["quality"] == {"m0": 1.0, "m1": 0.0, "m2": 0.0}
    assert fitted.prior["no_passage"]["turns"] == 6
    assert fitted.weights["m0"] == 0.0 and fitted.weights["m2"] > 0.5  # quality ties m1 and m2: < 1
    assert client.policy_store.get(prior_key("rerank"))["run"] == run
    assert {r["answer"] for r in by_prior.reranked} == {"paris"}
    assert {r["answer"] for r in by_trust.reranked} == {"paris"}
    version = client.policy_store.get(learned_key("rerank"))["version"]
    calibrate_run(settings, COMMITTEE, run)  # again: a new version of the learned decision
    assert client.policy_store.get(learned_key("rerank"))["version"] == version + 1


def test_into_stores_a_new_run_that_report_rows_and_show_can_read(stored) -> None:
    client, run = stored
    settings = _settings(client)
    calibrate_run(settings, COMMITTEE, run)
    new = f"{run}-prior"

    rerank_run(settings, COMMITTEE, run, Rule("borda", "uniform", prior=True), into=new)

    conversations = [c for c in _runs(client, new)]
    assert len(conversations) == 3
    turn = conversations[0].turns[1]
    decision = turn.result["decision"]
    assert (
        decision["reranked_from"]["run"] == run and decision["reranked_from"]["rule"] == "borda/uniform+prior"
    )
    assert decision["prior"] == {"m0": 1.0, "m1": 0.0, "m2": 0.0}
    assert len(turn.candidates) == 3 and len(turn.reviews) == 3
    with pytest.raises(InputError, match="exists already"):
        rerank_run(settings, COMMITTEE, run, Rule(), into=new)


def test_a_panel_of_reviewers_decides_by_its_own_ballots_only(stored) -> None:
    client, run = stored
    settings = _settings(client)

    by_m2 = rerank_run(settings, COMMITTEE, run, Rule(reviewers=("m2",)))
    by_m0 = rerank_run(settings, COMMITTEE, run, Rule(reviewers=("m0",)))

    assert {r["answer"] for r in by_m2.reranked} == {"paris"}  # m2's ballots put paris first
    assert {r["answer"] for r in by_m0.reranked} == {"rome"}  # m0's put rome first
    assert by_m2.label == f"{run}:borda/uniform[m2]"


def test_the_single_rule_takes_one_members_answer_and_is_reported_as_that_single_member(stored) -> None:
    client, run = stored
    settings = _settings(client)
    new = f"{run}-m2"

    done = rerank_run(settings, COMMITTEE, run, Rule("single", member="m2"), into=new)

    assert {r["answer"] for r in done.reranked} == {"london"}
    assert {r["method"] for r in done.reranked} == {"single:m2"}
    conversations = _runs(client, new)
    assert {c.method for c in conversations} == {"single:m2"}
    assert {t.result["chosen"] for c in conversations for t in c.turns} == {"m2"}


def test_p2_simulated_on_a_full_run_reuses_the_rules_previous_top_member_without_ballots(stored) -> None:
    client, run = stored
    settings = _settings(client)
    new = f"{run}-p2"

    done = rerank_run(settings, COMMITTEE, run, Rule(reviewers=("m0",), policy="p2"), into=new)

    # Turn 1 of each conversation is ranked by m0's ballot (rome); turn 2 reuses that member
    assert [r["answer"] for r in done.reranked] == ["rome"] * 6
    assert {r["policy"] for r in done.reranked} == {"p2"}
    conversations = _runs(client, new)
    assert {c.policy for c in conversations} == {"p2"}
    for conversation in conversations:
        first, second = (t.result for t in conversation.turns)
        assert (
            first["decision"]["ballots"] == 1 and first["ranking"][0] == "m1" and len(first["ranking"]) == 3
        )
        assert second["decision"]["ballots"] == 0 and second["ranking"] == ["m1"]
        assert second["decision"]["weights_note"].startswith("none: p2 reuse turn")
    with pytest.raises(InputError, match="needs a full-ranking run"):
        rerank_run(settings, COMMITTEE, new, Rule(policy="p2"))


def test_reranked_rows_report_the_model_calls_the_rule_needs(stored) -> None:
    client, run = stored
    settings = _settings(client)

    full = rerank_run(settings, COMMITTEE, run, Rule())
    panel = rerank_run(settings, COMMITTEE, run, Rule(reviewers=("m2",)))
    single = rerank_run(settings, COMMITTEE, run, Rule("single", member="m1"))
    p2 = rerank_run(settings, COMMITTEE, run, Rule(policy="p2"))

    # 3 generators + 3 reviewers; + 1 reviewer; 1 generation; a reuse turn generates once
    assert {r["timings"]["model_calls"] for r in full.reranked} == {6}
    assert {r["timings"]["model_calls"] for r in panel.reranked} == {4}
    assert {r["timings"]["model_calls"] for r in single.reranked} == {1}
    assert [r["timings"]["model_calls"] for r in p2.reranked] == [6, 1] * 3
    # A single member's turn takes that member's own generation time, no more than the whole turn's
    for row, stored_row in zip(single.reranked, single.stored, strict=True):
        assert row["timings"]["total_s"] <= stored_row["timings"]["total_s"]


def test_rules_naming_unknown_members_are_refused_with_the_names(stored) -> None:
    client, run = stored
    settings = _settings(client)

    with pytest.raises(InputError, match="not reviewers of committee 'rerank': nobody"):
        rerank_run(settings, COMMITTEE, run, Rule(reviewers=("m0", "nobody")))
    with pytest.raises(InputError, match="'m9' is not a generator"):
        rerank_run(settings, COMMITTEE, run, Rule("single", member="m9"))
    with pytest.raises(InputError, match="needs a member"):
        Rule("single")
    with pytest.raises(InputError, match="empty list of reviewers"):
        Rule(reviewers=())


def test_a_rule_needing_the_prior_without_one_and_a_single_member_run_are_refused(embedded) -> None:
    client = embedded(COMMITTEE)
    settings = _settings(client)
    single = _stored_run(client, method="single:m0")

    with pytest.raises(InputError, match="peer runs with K=1"):
        rerank_run(settings, COMMITTEE, single, Rule())
    with pytest.raises(InputError, match="no finished conversation"):
        rerank_run(settings, COMMITTEE, "no-such-run", Rule())
    with pytest.raises(InputError, match="unknown rerank method"):
        Rule("vote")  # type: ignore[arg-type]


def test_the_commands_print_the_fit_and_the_comparison(stored, tmp_path, monkeypatch, capsys) -> None:
    client, run = stored
    committee_file = tmp_path / "committee.json"
    committee_file.write_text(COMMITTEE.model_dump_json())
    monkeypatch.setenv("PEERBLEND_DATABASE_URL", _settings(client).database)
    monkeypatch.setenv("PEERBLEND_COMMITTEE_FILE", str(committee_file))
    monkeypatch.setenv("COLUMNS", "200")

    assert (
        cli.main(["calibrate", run, "--export", str(tmp_path / "learned.json"), "--note", "three stories"])
        == 0
    )
    assert cli.main(["rerank", run, "--method", "prior"]) == 0
    assert cli.main(["rerank", run, "--reviewers", "m2, m1"]) == 0
    assert cli.main(["reviewers", run, "--out", str(tmp_path / "reviewers.md")]) == 0

    out = capsys.readouterr().out
    assert "prior, no_passage (6 turns" in out and "m0 1.000" in out
    assert f"prior on run {run}:" in out
    assert "Requested comparisons" in out and f"[{run}:prior]" in out
    assert f"borda/uniform[m2,m1] on run {run}:" in out
    # m2 puts the gold "paris" first on all 6 turns (tau-b 0.82: rome and london tie at F1 0); m0 never
    assert "| jsonl (3 voters) | m2 | likelihood | m2 | 6 | 100 % | - | +0.82 (6) | 100.0 |" in out
    assert "| jsonl (3 voters) | m0 | likelihood | m0 | 6 | 100 % | - |" in out
    assert (tmp_path / "reviewers.md").read_text().startswith("| dataset | reviewer |")
    # three conversations are too few to cross-validate a learned decision: it says so, learns nothing
    exported = json.loads((tmp_path / "learned.json").read_text())
    assert f"learned decision v{exported['version']} of committee rerank:" in out and "nothing learned" in out
    assert exported["buckets"] == {} and exported["made"]["note"] == "three stories"
    assert exported["made"]["run"] == run

    # A panel stored as a run, reported beside its source with a requested comparison
    assert cli.main(["rerank", run, "--reviewers", "m2", "--into", f"{run}-m2"]) == 0
    out_dir = tmp_path / "report"
    argv = ["report", run, f"{run}-m2", "--no-bertscore", "--out", str(out_dir)]
    assert cli.main([*argv, "--versus", f"{run}-m2:{run}"]) == 0
    results = (out_dir / "results.md").read_text()
    assert "Requested comparisons" in results and f"[{run}-m2]" in results
    with pytest.raises(SystemExit):
        cli.main([*argv, "--versus", "no-colon"])


def test_a_turn_without_ballots_is_weighed_by_the_live_rule() -> None:
    # Given: a stored turn whose every review failed, and calibrated reviewer weights
    committee = scripted_committee(3, name="rerank", reviewer_weights="calibrated")
    calibrated = Calibrated({"m0": 0.0, "m1": 0.5, "m2": 1.0})
    failed = [
        {"reviewer": m, "method": "ranking", "status": "error", "ranking": [], "raw": "", "voters": [m]}
        for m in ("m0", "m1", "m2")
    ]
    row = {
        "conversation": {"id": "c0", "passage": None, "policy": "full"},
        "turn_index": 0,
        "candidates": [{"member": m, "text": m, "error": None, "seconds": 1.0} for m in ("m0", "m1", "m2")],
        "reviews": failed,
        "result": {"decision": {"preference": []}},
    }

    # When: rerank re-decides it, and a live turn of the same committee is weighed
    ((decision, record),) = rerank([row], Rule("borda", "calibrated"), committee, calibrated)
    live = stored_weights(
        {calibration_key("rerank"): calibrated.weights}, committee, [review_from_row(r) for r in failed]
    )

    # Then: the same weights and note (every reviewer of the turn), and no ballot counted
    assert decision.status == "no_ballots"
    assert (record["weights"], record["weights_note"]) == (live.weights, live.note)
    assert record["weights"] == {"m0": 0.0, "m1": 0.5, "m2": 1.0}


def _runs(client: BlendClient, run: str) -> list:
    from sqlmodel import Session

    from db import runs

    with Session(client.store.engine) as session:
        ids = [c.id for c, _ in runs.run_conversations(session=session, run=run)]
    return [client.fetch(i) for i in ids]
