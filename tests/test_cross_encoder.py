"""The cross-encoder pairwise judge, with a tiny randomly initialised classifier saved locally.

No reward-model weights can be downloaded here, so the test builds a small BERT
classifier in a temporary folder: it checks the loading and the pairwise
plumbing, not the judge's quality.
"""

from __future__ import annotations

import pytest

from pipeline.committee import Committee, Member
from pipeline.errors import BackendError
from workers.backends.base import BackendSpec, create_backend

transformers = pytest.importorskip("transformers")

WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "who",
    "wrote",
    "dune",
    "frank",
    "herbert",
    "model",
    "0",
    "1",
    "2",
    ":",
    "?",
]


@pytest.fixture(scope="module")
def judge_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-judge")
    (path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    config = transformers.BertConfig(
        vocab_size=len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=1,
    )
    transformers.set_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_compare_is_a_probability_and_antisymmetric(judge_path):
    judge = create_backend("cross-encoder", BackendSpec(model=str(judge_path)))

    forward = judge.compare("who wrote dune ?", "frank herbert", "dune")
    backward = judge.compare("who wrote dune ?", "dune", "frank herbert")

    assert 0.0 < forward < 1.0
    assert forward + backward == pytest.approx(1.0, abs=1e-5)


def test_a_missing_judge_fails_with_a_clear_message(tmp_path):
    with pytest.raises(BackendError, match="could not load cross-encoder judge"):
        create_backend("cross-encoder", BackendSpec(model=str(tmp_path / "nothing-here")))


def test_the_pairwise_baseline_runs_with_a_cross_encoder_judge(embedded, judge_path):
    members = tuple(Member(name=f"m{i}", backend="scripted", model=f"model{i}") for i in range(3))
    judge = Member(name="judge", backend="cross-encoder", model=str(judge_path), roles=("judge",))
    client = embedded(
        Committee(name="cross-encoder-judge", members=(*members, judge), pairwise_judge="judge")
    )

    (outcome,) = client.submit(["who wrote dune?"], method="pairwise").wait(timeout=60)

    (review,) = client.fetch(outcome.conversation_id).turns[0].reviews
    assert review["reviewer"] == "judge" and review["method"] == "pairwise" and review["status"] == "scored"
    assert sum(outcome.scores.values()) == pytest.approx(0.0, abs=1e-6)
    assert outcome.chosen in {"m0", "m1", "m2"}
