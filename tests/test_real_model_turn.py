"""One short turn end to end with a real offline model (SmolLM2-135M) behind both members."""

from __future__ import annotations

import pytest

from tests.conftest import smollm2_committee

pytestmark = pytest.mark.real_model


def test_a_real_model_committee_blends_a_short_turn(embedded):
    committee = smollm2_committee("real-smollm2")
    client = embedded(committee)

    (outcome,) = client.submit(["What is the capital of France?"]).wait(timeout=300)

    stored = client.fetch(outcome.conversation_id).turns[0]
    assert all(c["error"] is None and c["text"] for c in stored.candidates)
    assert outcome.answer in {c["text"] for c in stored.candidates}
    likelihood = next(r for r in stored.reviews if r["method"] == "likelihood")
    assert likelihood["status"] == "scored" and sorted(likelihood["ranking"]) == ["smol-a", "smol-b"]
    ranking = next(r for r in stored.reviews if r["method"] == "ranking")
    # written by constrained decoding: a complete ballot (two candidates: never "copied")
    assert ranking["status"] == "constrained" and sorted(ranking["ranking"]) == ["smol-a", "smol-b"]
    assert ranking["raw"].startswith("constrained: ")
    assert outcome.timings["generation_s"] > 0 and outcome.timings["review_s"] > 0
    # Every call of the turn counted with the model's own tokenizer, over the chat template it reads
    usage = stored.result["decision"]["usage"]
    assert set(usage["members"]) == {"smol-a", "smol-b"}
    assert all(m["counted"] == "tokenizer" and m["prompt_tokens"] > 20 for m in usage["members"].values())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
