"""TransformersBackend against the real offline models (SmolLM2-135M, Gemma-3-270M).

The first run converts each GGUF into ~/.cache/peerblend/models (15-60 s per
model); later runs load the converted folders in a few seconds.
"""

from __future__ import annotations

import math
import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from pipeline.prompt import Message, Prompt, ScoreRequest  # noqa: E402
from workers.backends.base import BackendSpec  # noqa: E402

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
