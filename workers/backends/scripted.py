"""A deterministic backend for tests and benchmarks: no model, scripted replies.

A test backend: committees may name it only where ``PEERBLEND_TEST_BACKENDS=1``.
Options (``pipeline.backend.ScriptedOptions``, from the member's ``options``):
- ``replies``: list of answers, used in turn (cycled); default: "<model>: <question>"
  where <question> is the last user message; cut to the prompt's ``max_new_tokens`` words.
- ``review_reply``: the text a ranking review returns (after the prefill);
  default: the labels shown, in reverse order, separated by '>'.
- ``scores``: {substring: log-prob}; a continuation containing a substring gets
  that score under the real question, -1.0 otherwise; content-free prompts
  (question "N/A") always score -1.0.
- ``fail``: an error message; every call raises BackendError with it.
- ``delay_s``: seconds to sleep per call (to model slow members).
- ``batch``: true to have the worker batch this member's calls like a local
  model's (``workers/batching.py``); off by default.
- ``ballot``: "constrained" or "structured" to declare ``Capability.BALLOT``, as a
  backend that writes complete ballots does: ``ballot_path`` reports that path
  (the reply is as above).

Every call is appended to the instance's ``calls`` (model, kind, prompt) so a
test can check who was asked what (``workers.runtime.resident_backends`` finds
the instances a worker built).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from pipeline.backend import Generated, Prompt, ScoreRequest, ScriptedOptions, parse_options
from pipeline.ballot_grammar import BallotPath
from pipeline.errors import BackendError
from pipeline.prompts import CONTENT_FREE_QUESTION, RANKING_PREFIX
from workers.backends.base import BackendSpec


class ScriptedBackend:
    def __init__(self, spec: BackendSpec) -> None:
        self.model = spec.model
        self.options = parse_options(ScriptedOptions, spec.options, backend="scripted")
        self.calls: list[tuple[str, str, Any]] = []  # (model, "generate" or "score", prompt or texts)
        self._lock = threading.Lock()
        self._replies = itertools.cycle(self.options.replies) if self.options.replies else None

    def _enter(self, kind: str, payload: Any) -> None:
        with self._lock:
            self.calls.append((self.model, kind, payload))
        if self.options.delay_s:
            time.sleep(self.options.delay_s)
        if self.options.fail:
            raise BackendError(self.options.fail)

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        return [self._one(prompt) for prompt in prompts]

    def _one(self, prompt: Prompt) -> str:
        self._enter("generate", prompt)
        question = prompt.messages[-1].content
        if prompt.prefill == RANKING_PREFIX:
            if self.options.review_reply is not None:
                return self.options.review_reply
            labels = re.findall(r"^\[([A-Z])\]", question, flags=re.M)
            return " " + " > ".join(reversed(labels))
        if self._replies is not None:
            with self._lock:
                reply = next(self._replies)
        else:
            reply = f"{self.model}: {question}"
        words = reply.split(" ")  # a word stands for a token here
        kept = " ".join(words[: prompt.max_new_tokens])
        return Generated(kept, ran_out=True) if len(words) > prompt.max_new_tokens else kept

    def ballot_path(self, labels: Sequence[str]) -> BallotPath:
        return BallotPath(self.options.ballot) if self.options.ballot else BallotPath.PARSED

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        self._enter("score", [r.continuation for r in requests])
        values = []
        for request in requests:
            value = -1.0
            if request.prompt.messages[-1].content != CONTENT_FREE_QUESTION:
                for key, score in self.options.scores.items():
                    if key in request.continuation:
                        value = score
                        break
            values.append(value)
        return values
