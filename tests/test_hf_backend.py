"""TransformersBackend against the real offline models (SmolLM2-135M, Gemma-3-270M).

The first run converts each GGUF into ~/.cache/peerblend/models (15-60 s per
model); later runs load the converted folders in a few seconds.
"""

from __future__ import annotations

import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from pipeline.backend import Message, Prompt, ScoreRequest, ran_out  # noqa: E402
from pipeline.ballot import LABELS, ParseStatus, parse_ranking  # noqa: E402
from pipeline.ballot_grammar import BallotPath  # noqa: E402
from pipeline.committee import default_committee  # noqa: E402
from pipeline.prompts import ranking_prompt  # noqa: E402
from pipeline.records import CandidateRecord, TurnContext  # noqa: E402
from pipeline.stages import review  # noqa: E402
from workers.backends.base import BackendSpec  # noqa: E402
from workers.batching import BatchingBackend  # noqa: E402

hf = pytest.importorskip("workers.backends.hf")

pytestmark = pytest.mark.real_model

FRANCE = Prompt(messages=(Message("user", "What is the capital of France?"),), max_new_tokens=8)


@pytest.fixture(scope="module")
def smollm() -> hf.TransformersBackend:
    return hf.TransformersBackend(BackendSpec(model="smollm2-135m"))


@pytest.fixture(scope="module")
def gemma() -> hf.TransformersBackend:
    return hf.TransformersBackend(BackendSpec(model="gemma3-270m"))


def test_generate_answers_a_simple_question(smollm: hf.TransformersBackend) -> None:
    [answer] = smollm.generate([FRANCE])

    assert answer
    assert "Paris" in answer


def test_generate_cuts_at_the_first_stop_string(smollm: hf.TransformersBackend) -> None:
    # Given the free answer "The capital of France is Paris."
    [free] = smollm.generate([FRANCE])
    stopped = Prompt(messages=FRANCE.messages, max_new_tokens=8, stop=(" of",))

    # When " of" is a stop string
    [cut] = smollm.generate([stopped])

    # Then the answer ends before it
    assert free.startswith(cut)
    assert " of" in free and " of" not in cut
    assert cut == free[: free.index(" of")].strip()


def test_an_answer_cut_by_its_token_limit_says_so_row_by_row(smollm: hf.TransformersBackend) -> None:
    # Given the free answer (which the model ends itself), a 3-token limit, and a stop string
    short = Prompt(messages=FRANCE.messages, max_new_tokens=3)
    roomy = Prompt(messages=FRANCE.messages, max_new_tokens=32)
    stopped = Prompt(messages=FRANCE.messages, max_new_tokens=8, stop=(" of",))

    # When they share one batch
    cut, free, ended = smollm.generate([short, roomy, stopped])

    # Then only the row that wrote all its tokens ran out (what a chat client reads as "length")
    assert free.startswith(cut) and len(cut) < len(free)
    assert [ran_out(cut), ran_out(free), ran_out(ended)] == [True, False, False]


def test_stops_apply_per_prompt_within_a_batch(smollm: hf.TransformersBackend) -> None:
    stopped = Prompt(messages=FRANCE.messages, max_new_tokens=8, stop=(" of",))

    together = smollm.generate([stopped, FRANCE])

    assert together == [smollm.generate([stopped])[0], smollm.generate([FRANCE])[0]]
    assert together[0] != together[1]


def test_prefill_is_not_repeated_in_the_output(smollm: hf.TransformersBackend) -> None:
    prefilled = Prompt(messages=FRANCE.messages, prefill="The capital is", max_new_tokens=4)

    [answer] = smollm.generate([prefilled])

    assert not answer.startswith("The capital is")
    assert "Paris" in answer


def test_score_prefers_a_sensible_continuation(smollm: hf.TransformersBackend) -> None:
    good, bad = smollm.score([ScoreRequest(FRANCE, "Paris"), ScoreRequest(FRANCE, "zxq vlorp")])

    assert all(math.isfinite(s) and s < 0 for s in (good, bad))
    assert good > bad


def test_score_of_an_empty_continuation_is_a_low_finite_value(
    smollm: hf.TransformersBackend,
) -> None:
    assert smollm.score([ScoreRequest(FRANCE, "")]) == [hf.EMPTY_CONTINUATION_SCORE]


def test_batching_does_not_change_greedy_outputs(smollm: hf.TransformersBackend) -> None:
    # Given two prompts of very different lengths (so one row is padded)
    long = Prompt(
        messages=(
            Message("system", "You answer in one short sentence, without any preamble."),
            Message("user", "Name a large planet in our solar system and say why."),
        ),
        max_new_tokens=8,
    )
    prompts = [FRANCE, long]

    # When they run together and alone, Then the outputs match
    assert smollm.generate(prompts) == [smollm.generate([p])[0] for p in prompts]


def test_batching_does_not_change_scores(smollm: hf.TransformersBackend) -> None:
    requests = [ScoreRequest(FRANCE, "Paris is the capital."), ScoreRequest(FRANCE, "Lyon")]

    together = smollm.score(requests)
    alone = [smollm.score([r])[0] for r in requests]

    assert together == pytest.approx(alone, abs=1e-4)


def test_mixed_max_new_tokens_keep_input_order(smollm: hf.TransformersBackend) -> None:
    short = Prompt(messages=FRANCE.messages, max_new_tokens=2)

    outputs = smollm.generate([FRANCE, short, FRANCE])

    assert outputs[0] == outputs[2]
    assert outputs[0].startswith(outputs[1])


def test_rows_with_different_limits_share_a_batch_and_keep_their_own_limit(
    smollm: hf.TransformersBackend,
) -> None:
    # Given prompts of 2, 8 and 5 new tokens (one of them stopping on text)
    prompts = [
        Prompt(messages=FRANCE.messages, max_new_tokens=2),
        Prompt(messages=(Message("user", "Describe Paris in one sentence."),), max_new_tokens=8),
        Prompt(messages=FRANCE.messages, max_new_tokens=5, stop=(" of",)),
    ]

    # When they run as one batch, Then each output is what it is alone
    assert smollm.generate(prompts) == [smollm.generate([p])[0] for p in prompts]
    assert len(smollm.tokenizer(smollm.generate(prompts[:1])[0])["input_ids"]) <= 2


def _reference_scores(backend: hf.TransformersBackend, requests: list[ScoreRequest]) -> list[float]:
    """Mean log-probabilities from one plain forward pass over prompt + continuation, per request."""
    import torch

    scores = []
    for request in requests:
        context, continuation = backend._score_ids(request)
        ids = torch.tensor([context + continuation])
        with torch.inference_mode():
            logits = backend.model(input_ids=ids).logits[0].float()
        logprobs = logits[:-1].log_softmax(-1).gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)
        scores.append(float(logprobs[-len(continuation) :].mean()))
    return scores


ANSWERS = ["Paris", "It is Lyon, a big city.", "zxq vlorp", "The capital of France is Paris, on the Seine."]


@pytest.mark.parametrize("model", ["smollm", "gemma"])
def test_shared_prompt_scores_equal_a_plain_forward_pass(model: str, request: pytest.FixtureRequest) -> None:
    backend: hf.TransformersBackend = request.getfixturevalue(model)
    # Given candidates under two prompts, interleaved as a reviewer sends them
    other = Prompt(messages=(Message("system", "You answer accurately."), Message("user", "N/A")))
    requests = [ScoreRequest(p, a) for a in ANSWERS for p in (FRANCE, other)]

    # When scored in one call (each prompt runs once, its continuations on top)
    scores = backend.score(requests)

    # Then they match a forward pass over each whole sequence, in request order
    assert scores == pytest.approx(_reference_scores(backend, requests), abs=1e-3)


def test_a_long_prompt_past_gemmas_sliding_window_scores_correctly(gemma: hf.TransformersBackend) -> None:
    # Given a prompt longer than Gemma-3's 512-token sliding attention window
    passage = " ".join(f"Fact {i}: the river is {i} metres deep." for i in range(90))
    prompt = Prompt(
        messages=(Message("system", passage), Message("user", "How deep is the river at fact 7?"))
    )
    requests = [ScoreRequest(prompt, a) for a in ("7 metres", "It is 7 metres deep.")]
    assert len(gemma._score_ids(requests[0])[0]) > 512

    assert gemma.score(requests) == pytest.approx(_reference_scores(gemma, requests), abs=1e-3)


def test_a_repeated_prompt_is_scored_from_the_prefix_cache_with_the_same_result(
    smollm: hf.TransformersBackend,
) -> None:
    requests = [ScoreRequest(FRANCE, a) for a in ANSWERS]
    first = smollm.score(requests)
    context = tuple(smollm._score_ids(requests[0])[0])
    assert context in smollm._prefixes

    # When the same prompt comes again after its cached keys/values were used
    again = smollm.score(list(reversed(requests)))

    # Then nothing was consumed from the cache: the scores are the same
    assert again == pytest.approx(list(reversed(first)), abs=1e-5)
    assert len(smollm._prefixes) <= smollm.prefix_cache_size


def test_base_model_uses_a_transcript_and_stops_at_newline(
    gemma: hf.TransformersBackend,
) -> None:
    prompt = Prompt(messages=FRANCE.messages, max_new_tokens=12, stop=("\n",))

    [answer] = gemma.generate([prompt])

    assert gemma.render(prompt).endswith("Assistant:")
    assert answer and "\n" not in answer


def test_unknown_dtype_is_a_config_error() -> None:
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError):
        hf.TransformersBackend(BackendSpec(model="smollm2-135m", dtype="float8"))


def test_missing_model_is_a_backend_error(tmp_path: os.PathLike[str]) -> None:
    from pipeline.errors import BackendError

    with pytest.raises(BackendError, match="no-such-model"):
        hf.TransformersBackend(BackendSpec(model=str(tmp_path) + "/no-such-model"))


def test_generation_stops_at_the_members_deadline(smollm: hf.TransformersBackend) -> None:
    # Given the same model with a time limit far below what 400 new tokens take on a CPU
    from dataclasses import replace

    bounded = hf.TransformersBackend(replace(smollm.spec, timeout_s=0.05))
    story = Prompt(messages=(Message("user", "Tell me a very long story about Dune."),), max_new_tokens=400)

    # When it generates
    [cut] = bounded.generate([story])

    # Then it stopped early (a few tokens at most), instead of running on after its task gave up
    assert len(bounded.tokenizer(cut)["input_ids"]) < 50


def test_sampled_prompts_vary_within_a_batch_repeat_under_a_seed_and_leave_greedy_rows_alone(
    smollm: hf.TransformersBackend,
) -> None:
    story = Prompt(messages=(Message("user", "Tell me a story about a cat."),), max_new_tokens=12)
    hot = [Prompt(messages=story.messages, max_new_tokens=12, temperature=1.5, seed=7 + i) for i in range(4)]
    [greedy] = smollm.generate([story])

    first = smollm.generate([*hot, story])
    again = smollm.generate([*hot, story])

    assert first[-1] == greedy  # the greedy row is not sampled, though it shares the call
    assert len(set(first[:4])) > 1  # identical sampled prompts in one batch differ
    assert first == again  # the same seeds give the same samples


# --- ballots by constrained decoding -----------------------------------------------------------

RANKED = [  # (question, answers shown as A, B, ...)
    ("What is the capital of France?", ["Berlin", "Paris"]),
    ("What is the capital of France?", ["I don't know.", "Paris"]),
    ("Who wrote Hamlet?", ["Charles Dickens", "William Shakespeare wrote Hamlet.", "Hamlet is a play."]),
    ("What is 2 + 2?", ["Five hundred", "Four", "The answer is 4."]),
    ("Which planet is known as the Red Planet?", ["Venus", "Jupiter", "Mars", "Saturn"]),
]


def _ballot_prompt(question: str, answers: list[str]) -> Prompt:
    labelled = [(LABELS[i], text) for i, text in enumerate(answers)]
    return replace(ranking_prompt(question, [], labelled), ballot=tuple(LABELS[: len(answers)]))


@pytest.mark.parametrize("model", ["smollm", "gemma"])
def test_the_real_tokenizers_write_every_label_and_the_separator_as_one_token(
    model: str, request: pytest.FixtureRequest
) -> None:
    backend: hf.TransformersBackend = request.getfixturevalue(model)
    tokens = backend.ballot_tokens

    assert tokens.covers(LABELS)
    assert backend.ballot_path(LABELS) is BallotPath.CONSTRAINED
    for label in LABELS:  # " A" and "A" are different tokens in both vocabularies
        assert {backend.tokenizer.decode([t]) for t in tokens.labels[label]} == {label, f" {label}"}
    assert {backend.tokenizer.decode([t]) for t in tokens.separator} == {">", " >"}
    assert tokens.end == {backend.model.generation_config.eos_token_id}


@pytest.mark.parametrize("model", ["smollm", "gemma"])
def test_a_constrained_ranking_is_always_a_complete_strict_ballot_in_the_models_order(
    model: str, request: pytest.FixtureRequest
) -> None:
    backend: hf.TransformersBackend = request.getfixturevalue(model)
    prompts = [_ballot_prompt(q, answers) for q, answers in RANKED]

    replies = backend.generate(prompts)

    for prompt, reply in zip(prompts, replies, strict=True):
        parsed = parse_ranking(reply, prompt.ballot)
        assert parsed.status in (ParseStatus.OK, ParseStatus.COPIED), reply
        assert sorted(re.findall(r"[A-Z]", reply)) == list(prompt.ballot), reply
        assert reply == " > ".join(re.findall(r"[A-Z]", reply))  # nothing else written
    if model == "smollm":  # its own order, not a fixed one: Paris over Berlin
        assert replies[0] == "B > A"


def test_ballot_rows_and_free_rows_share_a_batch(smollm: hf.TransformersBackend) -> None:
    ballot = _ballot_prompt(*RANKED[0])
    free = replace(ballot, ballot=())

    together = smollm.generate([ballot, free, FRANCE])

    assert together == [smollm.generate([p])[0] for p in (ballot, free, FRANCE)]
    assert parse_ranking(together[1], ballot.ballot).status is ParseStatus.UNPARSABLE  # as before


def test_concurrent_reviews_batched_by_the_worker_each_get_their_own_ballot(
    smollm: hf.TransformersBackend,
) -> None:
    # Given the worker's batcher in front of the model, and reviews of 2, 3 and 4 candidates at once
    batcher = BatchingBackend(smollm, max_batch=8, window_s=0.2)
    prompts = [_ballot_prompt(q, answers) for q, answers in RANKED[:1] + RANKED[2:]]

    with ThreadPoolExecutor(len(prompts)) as pool:
        replies = list(pool.map(lambda p: batcher.generate([p])[0], prompts))

    # Then they ran as one batch, and each reply is a complete ballot of its own labels
    assert batcher.stats()["generate"].largest == len(prompts)
    for prompt, reply in zip(prompts, replies, strict=True):
        assert sorted(re.findall(r"[A-Z]", reply)) == list(prompt.ballot)


def test_a_smollm2_ranking_reviewer_gives_a_ballot_on_every_turn(smollm: hf.TransformersBackend) -> None:
    # Given a SmolLM2 ranking reviewer (the default committee's smollm2-terse, made to review)
    committee = default_committee()
    reviewer = committee.member("smollm2-terse").model_copy(update={"roles": ("generator", "reviewer")})
    assert reviewer.review_method == "ranking"

    # When it reviews several turns, each shown in its own seeded order
    records = []
    for index, (question, answers) in enumerate(RANKED):
        candidates = [CandidateRecord(f"m{i}", text) for i, text in enumerate(answers)]
        context = TurnContext("ballots", index, question)
        records.append(review(smollm, reviewer, committee, context, candidates))

    # Then every review wrote a complete ballot by constrained decoding; one that copies the
    # order shown (three or more candidates) is recorded as such and dropped, as free text is
    for record in records:
        assert record.status in ("constrained", "copied"), record
        assert record.raw.startswith("constrained: ")
        written = re.findall(r"[A-Z]", record.raw.removeprefix("constrained: "))
        assert sorted(written) == list(LABELS[: len(record.shown_order)])
        if record.status == "constrained":
            assert sorted(record.ranking) == sorted(record.shown_order)


# --- scoring memory bounded in bytes (issue 22 item 4) ------------------------------------------------


def _long_prompt(turns: int = 12) -> Prompt:
    from tests.benchmarks.bench_scoring_memory import review_requests

    return review_requests(turns)[0].prompt


def _cache_bytes(prefix: object) -> int:
    """Bytes of a cached prompt's keys and values."""
    layers = prefix.cache.layers  # type: ignore[attr-defined]
    return sum(t.nbytes for layer in layers for t in (layer.keys, layer.values))


def test_scoring_rows_share_the_prompts_cached_keys_and_values_without_copies(
    smollm: hf.TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.benchmarks.bench_scoring_memory import peak_bytes

    # Given a long prompt already in the prefix cache, and eight short candidates under it
    prompt = _long_prompt()
    requests = [ScoreRequest(prompt, f"Answer {i}.") for i in range(8)]
    smollm.score(requests[:1])
    held = _cache_bytes(smollm._prefixes[smollm._score_ids(requests[0])[0]])

    # When they are scored in one call
    peak, scores = peak_bytes(lambda: smollm.score(requests))

    # Then the call held less than two more copies of the prompt's keys/values (one layer's
    # attention reads them for all rows, repeated over the query heads; a deep copy repeated
    # per row held nine copies for every layer at once)
    assert peak < 2 * held
    assert scores == pytest.approx(_reference_scores(smollm, requests), abs=1e-3)


def test_log_probs_are_gathered_without_float32_logits_for_every_token_at_once(
    smollm: hf.TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.benchmarks.bench_scoring_memory import CANDIDATES, peak_bytes

    # Given long candidates: 8 x ~30 positions over a 49k vocabulary (~45 MiB of float32 logits)
    requests = [ScoreRequest(FRANCE, f"{c} {c}") for c in CANDIDATES * 2]
    smollm.score(requests[:1])  # the prompt in the prefix cache
    positions = sum(len(smollm._score_ids(r)[1]) - 1 for r in requests)
    all_logits = positions * smollm.model.config.vocab_size * 4
    monkeypatch.setattr(hf, "LOGITS_CHUNK_BYTES", 2 * 2**20, raising=False)

    peak, scores = peak_bytes(lambda: smollm.score(requests))

    assert peak < all_logits / 4
    assert scores == pytest.approx(_reference_scores(smollm, requests), abs=1e-3)


def test_the_prefix_cache_is_bounded_in_bytes(
    smollm: hf.TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [_long_prompt(turns) for turns in (10, 11, 12)]
    monkeypatch.setattr(smollm, "_prefixes", type(smollm._prefixes)())
    smollm.score([ScoreRequest(prompts[0], "Yes.")])
    one = _cache_bytes(next(iter(smollm._prefixes.values())))
    # Room for one long prompt's keys/values, though the count would allow eight
    monkeypatch.setattr(smollm, "prefix_cache_bytes", int(1.5 * one), raising=False)

    smollm.score([ScoreRequest(p, "Yes.") for p in prompts])

    assert len(smollm._prefixes) == 1
    assert sum(_cache_bytes(p) for p in smollm._prefixes.values()) <= 1.5 * one


def test_rows_stop_at_their_own_deadlines_within_one_batch(smollm: hf.TransformersBackend) -> None:
    import time

    story = Prompt(messages=(Message("user", "Tell me a very long story about Dune."),), max_new_tokens=60)

    # Given two rows in one batch, one whose caller has almost no time left
    late, free = smollm.generate([story, story], deadlines=[time.monotonic() + 0.05, None])

    # Then that row stopped early and the other ran to its own limit
    assert len(smollm.tokenizer(late)["input_ids"]) < 20
    assert len(smollm.tokenizer(free)["input_ids"]) > 40


def test_a_cached_long_prompt_keeps_only_its_window_in_gemmas_sliding_layers(
    gemma: hf.TransformersBackend,
) -> None:
    # Given a prompt longer than Gemma-3's 512-token sliding window, scored once
    passage = " ".join(f"Fact {i}: the river is {i} metres deep." for i in range(90))
    request = ScoreRequest(Prompt(messages=(Message("system", passage), Message("user", "How deep?"))), "7 m")
    gemma.score([request])
    prefix = gemma._prefixes[gemma._score_ids(request)[0]]

    # Then no layer's cached keys/values keep the whole prompt's storage alive behind a window view
    tensors = [t for layer in prefix.cache.layers for t in (layer.keys, layer.values)]
    assert any(layer.is_sliding for layer in prefix.cache.layers)
    assert all(t.untyped_storage().nbytes() == t.nbytes for t in tensors)
