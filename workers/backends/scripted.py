"""A deterministic backend for tests and benchmarks: no model, scripted replies.

Options (from the member's ``options`` in the committee config):
- ``replies``: list of answers, used in turn (cycled); default: "<model>: <question>"
  where <question> is the last user message.
- ``review_reply``: the text a ranking review returns (after the prefill);
  default: the labels shown, in reverse order, separated by '>'.
- ``scores``: {substring: log-prob}; a continuation containing a substring gets
  that score under the real question, -1.0 otherwise; content-free prompts
  (question "N/A") always score -1.0.
- ``fail``: an error message; every call raises BackendError with it.
- ``delay_s``: seconds to sleep per call (to model slow members).
- ``batch``: true to have the worker batch this member's calls like a local
  model's (``workers/batching.py``); off by default.

Every call is appended to ``ScriptedBackend.calls`` (model, kind, prompt) so a
test can check who was asked what.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from pipeline.errors import BackendError
from pipeline.prompt import Prompt, ScoreRequest
from pipeline.prompts import CONTENT_FREE_QUESTION, RANKING_PREFIX
from workers.backends.base import BackendSpec


class ScriptedBackend:
    calls: ClassVar[list[tuple[str, str, Any]]] = []
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, spec: BackendSpec) -> None:
        self.model = spec.model
        self.options = dict(spec.options)
        self.batches_calls = bool(self.options.get("batch", False))
        replies = self.options.get("replies")
        self._replies = itertools.cycle(list(replies)) if replies else None  # type: ignore[call-overload]

    def _enter(self, kind: str, payload: Any) -> None:
        with self._lock:
            self.calls.append((self.model, kind, payload))
        delay = float(self.options.get("delay_s", 0.0))  # type: ignore[arg-type]
        if delay:
            time.sleep(delay)
        if self.options.get("fail"):
            raise BackendError(str(self.options["fail"]))

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        return [self._one(prompt) for prompt in prompts]

    def _one(self, prompt: Prompt) -> str:
        self._enter("generate", prompt)
        question = prompt.messages[-1].content
        if prompt.prefill == RANKING_PREFIX:
            if "review_reply" in self.options:
                return str(self.options["review_reply"])
            labels = re.findall(r"^\[([A-Z])\]", question, flags=re.M)
            return " " + " > ".join(reversed(labels))
        if self._replies is not None:
            with self._lock:
                return str(next(self._replies))
        return f"{self.model}: {question}"

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        self._enter("score", [r.continuation for r in requests])
        table: dict[str, float] = dict(self.options.get("scores", {}))  # type: ignore[call-overload]
        values = []
        for request in requests:
            value = -1.0
            if request.prompt.messages[-1].content != CONTENT_FREE_QUESTION:
                for key, score in table.items():
                    if key in request.continuation:
                        value = float(score)
                        break
            values.append(value)
        return values

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls.calls.clear()
