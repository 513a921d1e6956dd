"""Backend for OpenAI-compatible HTTP servers (vLLM, Ollama, llama.cpp server, hosted APIs).

``spec.model`` is the model name sent to the server. Options (the member's
``options`` in the committee config, ``pipeline.backend.OpenAIOptions``):

- ``base_url`` (required): e.g. ``"http://127.0.0.1:8000/v1"``; requests go to
  ``{base_url}/chat/completions`` and, for scoring, ``{base_url}/completions``.
- ``api_key_env``: name of the environment variable holding the API key (sent as
  ``Authorization: Bearer``); default none, no header.
- ``timeout_s`` (60), ``max_retries`` (3), ``backoff_s`` (0.5, doubled per retry,
  a 429's ``Retry-After`` wins when present; both capped at 30 s).
- ``max_concurrency`` (4): simultaneous requests from this backend, all threads together.
- ``temperature`` (0.0), ``extra_body`` ({}): merged into every request body last.
- ``continue_final_message`` (false): for vLLM, sends ``continue_final_message``
  and ``add_generation_prompt=false`` with prompts that have a prefill, so the
  server continues it. llama.cpp and Ollama continue a final assistant message by
  themselves; other servers may ignore it and answer afresh, which is why a reply
  that repeats the prefill has it stripped.

The server is not contacted here: a down server fails the member's calls (the
caller excludes the member from that turn), never the worker's start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

from pipeline.backend import OpenAIOptions, Prompt, ScoreRequest, parse_options, render_transcript
from pipeline.errors import BackendError, ConfigError
from workers.backends.base import BackendSpec

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
MAX_STOPS = 4  # OpenAI-compatible servers accept at most four stop strings
EMPTY_CONTINUATION_SCORE = -100.0  # as TransformersBackend: finite, below any real mean
_ERROR_TEXT_CHARS = 300
_NO_SCORING = (
    "scoring needs /completions with echo and logprobs (vLLM, llama.cpp); "
    'give this member review_method "ranking"'
)
_T = TypeVar("_T")
_R = TypeVar("_R")


class _Refused(BackendError):
    """The server answered with a 4xx other than 429: retrying will not help."""


def _base_url(raw: str) -> str:
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as error:
        raise ConfigError(f"openai backend: base_url {raw!r} does not parse: {error}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"openai backend: base_url {raw!r} needs http:// or https:// and a host")
    return raw.rstrip("/")


def _strip_prefill(text: str, prefill: str) -> str:
    """The reply after the prefill, for servers that answered afresh and repeated it."""
    head = prefill.strip()
    if head and text.lstrip().startswith(head):
        return text.lstrip()[len(head) :]
    return text


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text before the first stop string after the leading whitespace (servers get only four)."""
    text = text.lstrip()
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut].strip()


class OpenAIBackend:
    """One member's model behind an OpenAI-compatible server; safe to share between threads."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.options = parse_options(OpenAIOptions, spec.options, backend="openai")
        self.base_url = _base_url(self.options.base_url)
        headers = {}
        if self.options.api_key_env:
            key = os.environ.get(self.options.api_key_env)
            if not key:
                raise ConfigError(
                    f"openai backend for model {spec.model!r}: environment variable "
                    f"{self.options.api_key_env!r} (options.api_key_env) is not set"
                )
            headers["Authorization"] = f"Bearer {key}"
        # httpx.Client is thread-safe; one per backend keeps connections alive.
        self._client = httpx.Client(headers=headers, timeout=self.options.timeout_s)
        self._slots = threading.BoundedSemaphore(self.options.max_concurrency)

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        """One chat completion per prompt (concurrently): the reply after the prefill, stripped."""
        return self._each(self._generate_one, prompts)

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """Mean log-probability per continuation token (natural log, <= 0), via ``/completions``.

        Needs a server that echoes prompt logprobs (vLLM, llama.cpp); others raise
        BackendError: such a member must use review_method "ranking".
        """
        return self._each(self._score_one, requests)

    def close(self) -> None:
        self._client.close()

    def _each(self, one: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        if len(items) <= 1:
            return [one(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(len(items), self.options.max_concurrency)) as pool:
            return list(pool.map(one, items))

    def _generate_one(self, prompt: Prompt) -> str:
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": messages,
            "max_tokens": prompt.max_new_tokens,
            "temperature": self.options.temperature,
        }
        if prompt.prefill:
            messages.append({"role": "assistant", "content": prompt.prefill})
            if self.options.continue_final_message:
                body |= {"continue_final_message": True, "add_generation_prompt": False}
        if prompt.stop:
            body["stop"] = list(prompt.stop[:MAX_STOPS])
        data = self._post("/chat/completions", body | self.options.extra_body)
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise BackendError(
                f"{self._where('/chat/completions')}: reply has no choices[0].message"
            ) from None
        return _cut_at_stop(_strip_prefill(str(text), prompt.prefill), prompt.stop)

    def _score_one(self, request: ScoreRequest) -> float:
        context = render_transcript(request.prompt)
        continuation = request.continuation
        if not continuation:
            return EMPTY_CONTINUATION_SCORE
        # As TransformersBackend: after a bare "Assistant:" the answer starts with a space.
        if not request.prompt.prefill and continuation[:1].isalnum():
            continuation = " " + continuation
        body = {
            "model": self.spec.model,
            "prompt": context + continuation,
            "echo": True,
            "logprobs": 1,
            "max_tokens": 0,
            "temperature": 0.0,
        }
        try:
            data = self._post("/completions", body | self.options.extra_body)
        except _Refused as error:
            raise BackendError(f"{error}; {_NO_SCORING}") from error
        try:
            logprobs = data["choices"][0]["logprobs"]
            offsets, values = logprobs["text_offset"], logprobs["token_logprobs"]
            # The continuation starts in the last token that begins at or before it.
            first = max(i for i, offset in enumerate(offsets) if offset <= len(context))
            picked = [float(v) for v in values[first:] if v is not None]
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise BackendError(f"{self._where('/completions')}: no prompt logprobs; {_NO_SCORING}") from error
        if not picked:
            raise BackendError(f"{self._where('/completions')}: no logprobs for the continuation")
        return sum(picked) / len(picked)

    def _where(self, path: str) -> str:
        return f"model {self.spec.model!r} at {self.base_url}{path}"

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        """POST with retries on 429, 5xx, timeouts and connection errors; the JSON reply."""
        url = self.base_url + path
        last, delay = "", 0.0
        for attempt in range(self.options.max_retries + 1):
            if attempt:
                time.sleep(delay)
            delay = min(self.options.backoff_s * 2**attempt, MAX_BACKOFF_S)
            try:
                with self._slots:
                    response = self._client.post(url, json=body)
            except httpx.TransportError as error:
                last = f"{type(error).__name__}: {error}"
            else:
                if response.is_success:
                    try:
                        return response.json()
                    except ValueError:
                        raise BackendError(f"{self._where(path)}: reply is not JSON") from None
                text = response.text[:_ERROR_TEXT_CHARS]
                last = f"HTTP {response.status_code}: {text}"
                if response.status_code != 429 and response.status_code < 500:
                    raise _Refused(f"{self._where(path)} refused the request: {last}")
                retry_after = response.headers.get("Retry-After", "")
                if response.status_code == 429 and retry_after.replace(".", "", 1).isdigit():
                    delay = min(float(retry_after), MAX_BACKOFF_S)
            logger.warning("%s: attempt %d failed: %s", self._where(path), attempt + 1, last)
        raise BackendError(
            f"{self._where(path)} failed after {self.options.max_retries + 1} attempts: {last}"
        )
