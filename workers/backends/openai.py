"""Backend for OpenAI-compatible HTTP servers (vLLM, SGLang, Ollama, llama.cpp's server, hosted APIs).

``spec.model`` is the model name the server serves (vLLM: ``--served-model-name``).
Options (the member's ``options``, ``pipeline.backend.OpenAIOptions``):

- ``base_url`` (required): e.g. ``"http://127.0.0.1:8000/v1"``.
- ``api_key_env``: the environment variable holding the API key (sent as
  ``Authorization: Bearer``); none: no header.
- ``timeout_s``: most seconds one request may take; default the member's time
  limit (``timeout_s`` in the committee, else ``PEERBLEND_GENERATION_TIME_LIMIT_S``).
- ``max_retries`` (3): retries by the official ``openai`` SDK, on 408/409/429/5xx,
  timeouts and refused connections, with exponential backoff and jitter (0.5 s
  doubling to 8 s, minus up to 25 %), or the server's ``Retry-After`` (seconds or
  an HTTP date) / ``retry-after-ms`` when it sends one (up to 2 minutes).
- ``max_concurrency`` (4): requests in flight from this backend, all threads together.
- ``temperature`` (0.0), ``extra_body`` ({}): merged into every request body last.
- ``continue_final_message`` (false): for vLLM, prompts with a prefill are sent
  with ``continue_final_message`` so the server continues the prefill. Other
  servers may answer afresh; a reply that repeats the prefill has it stripped.

Scoring (likelihood review, a pairwise judge) needs the prompt's log-probs:
``/completions`` with ``echo`` and ``logprobs`` (vLLM has them; llama.cpp's server
and OpenAI's API do not). Where the server has vLLM's ``/tokenize``, each prompt
is rendered as ``TransformersBackend`` renders it (the served model's chat template,
prefill continued; context and continuation tokenized apart) and sent as token
ids; elsewhere (no ``/tokenize``, no chat template) as the plain transcript text.
All the requests of one ``score`` call (one review: every candidate under two
prompts) go to the server as one ``/completions`` request with a list of prompts.
``max_tokens`` is 1, not 0 (some vLLM versions refuse 0); the token it generates
is not counted.

Ballots (``Prompt.ballot``, a ranking review): where the server has structured
outputs, the reply is one of the complete strict ballots of the labels
(``complete_ballots``, n! strings, up to six labels), asked in the first form the
server honours of: vLLM's ``structured_outputs: {choice: [...]}`` (0.12 and later),
vLLM's older ``guided_choice``, a ``response_format`` JSON schema (OpenAI's API,
llama.cpp's server; the reply ``{"ranking": "B > A > C"}``). Elsewhere, and for more
labels, the reviewer writes free text that ``parse_ranking`` reads. A server that
later refuses the form (HTTP 4xx) is asked in free text from then on.

``warm_up`` (called once when a worker starts) checks that the server serves the
model, probes scoring once (a server that cannot score makes every later ``score``
call fail at once with a message saying to use ``review_method = "ranking"``), and
finds the server's structured-output form: a tiny request per form whose only
allowed reply is one a model would not write unasked, so a server that ignores an
unknown field is not mistaken for one that honours it. Construction does not
contact the server.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
import openai

from pipeline.backend import (
    Generated,
    Message,
    OpenAIOptions,
    Prompt,
    ScoreRequest,
    cut_at_stop,
    parse_options,
    ran_out,
    render_transcript,
)
from pipeline.ballot_grammar import MAX_BALLOT_CHOICES, BallotPath, complete_ballots
from pipeline.errors import BackendError, ConfigError
from workers.backends.base import BackendSpec

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0  # per request, when neither the option nor the member's limit is set
MAX_STOPS = 4  # OpenAI-compatible servers accept at most four stop strings
EMPTY_CONTINUATION_SCORE = -100.0  # as TransformersBackend: finite, below any real mean
_ERROR_TEXT_CHARS = 300
_NO_SCORING = (
    "likelihood review needs /completions with echo and logprobs (vLLM has them; "
    "llama.cpp's server and OpenAI's API do not); give the members on this model "
    'review_method = "ranking"'
)
_PROBE = Prompt((Message("user", "Say hello."),), max_new_tokens=1)
# A structured-output probe allows one reply, which nobody says to "Say hello." unasked.
_BALLOT_PROBE = Prompt((Message("user", "Say hello."),), max_new_tokens=8)
_BALLOT_PROBE_CHOICE = "Q > Z"
BallotForm = Literal["structured_outputs", "guided_choice", "json_schema"]
BALLOT_FORMS: tuple[BallotForm, ...] = ("structured_outputs", "guided_choice", "json_schema")
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class _Scoring:
    """How this server scores: token ids rendered by its ``/tokenize`` (chat template), or transcript text."""

    form: Literal["tokens", "text"]


def _base_url(raw: str) -> str:
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as error:
        raise ConfigError(f"openai backend: base_url {raw!r} does not parse: {error}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"openai backend: base_url {raw!r} needs http:// or https:// and a host")
    return raw.rstrip("/")


def _api_key(spec: BackendSpec, env: str | None) -> str | None:
    if not env:
        return None
    key = os.environ.get(env)
    if not key:
        raise ConfigError(
            f"openai backend for model {spec.model!r}: environment variable {env!r} "
            "(options.api_key_env) is not set"
        )
    return key


def _strip_prefill(text: str, prefill: str) -> str:
    """The reply after the prefill, for servers that answered afresh and repeated it."""
    head = prefill.strip()
    if head and text.lstrip().startswith(head):
        return text.lstrip()[len(head) :]
    return text


def ballot_body(form: BallotForm, choices: list[str]) -> dict[str, Any]:
    """The request fields that limit the reply to one of ``choices``, in ``form``."""
    if form == "structured_outputs":
        return {"structured_outputs": {"choice": choices}}
    if form == "guided_choice":
        return {"guided_choice": choices}
    schema = {
        "type": "object",
        "properties": {"ranking": {"type": "string", "enum": choices}},
        "required": ["ranking"],
        "additionalProperties": False,
    }
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "ballot", "strict": True, "schema": schema},
        }
    }


def ballot_reply(form: BallotForm, text: str) -> str:
    """The ballot in a structured reply (the JSON schema's ``ranking``); anything else as it came."""
    if form != "json_schema":
        return text
    try:
        return str(json.loads(text)["ranking"])
    except (ValueError, KeyError, TypeError):
        return text  # parse_ranking will say what it is


def _ballot_fits(labels: Sequence[str]) -> bool:
    return len(labels) >= 2 and math.factorial(len(labels)) <= MAX_BALLOT_CHOICES


def _mean(values: Sequence[float | None]) -> float:
    picked = [float(v) for v in values if v is not None]
    if not picked:
        raise ValueError("no log-probs for the continuation")
    return sum(picked) / len(picked)


class OpenAIBackend:
    """One member's model behind an OpenAI-compatible server; safe to share between threads."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.options = parse_options(OpenAIOptions, spec.options, backend="openai")
        self.base_url = _base_url(self.options.base_url)
        key = _api_key(spec, self.options.api_key_env)
        # The SDK insists on a key; without one the header is left out of every request.
        self._headers: dict[str, Any] = {} if key else {"Authorization": openai.omit}
        limits = [t for t in (self.options.timeout_s, spec.timeout_s) if t]
        self.timeout_s = min(limits, default=DEFAULT_TIMEOUT_S)
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=key or "unused",
            timeout=openai.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0)),
            max_retries=self.options.max_retries,
        )
        self._slots = threading.BoundedSemaphore(self.options.max_concurrency)
        self._scoring: _Scoring | None = None
        self._cannot_score: str | None = None  # why, once the server has shown it cannot
        self._probe_lock = threading.Lock()
        self._warm_up_lock = threading.Lock()
        self._warmed_up = False
        # The server's structured-output form, found by warm_up; only ever cleared after.
        self._ballot_form: BallotForm | None = None

    # --- the Backend interface -------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        """One chat completion per prompt (concurrently): the reply after the prefill, stripped."""
        return self._each(self._generate_one, prompts)

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """Mean log-probability per continuation token (natural log, <= 0), one request for all."""
        if self._cannot_score:
            raise BackendError(self._cannot_score)
        live = list(dict.fromkeys(r for r in requests if r.continuation))  # identical ones run once
        scores = dict(zip(live, self._score_all(live), strict=True)) if live else {}
        return [scores.get(r, EMPTY_CONTINUATION_SCORE) for r in requests]

    def warm_up(self) -> None:
        """Check that the server serves the model; probe scoring (a failure is kept, not raised).

        Once per backend, however many members share it.
        """
        with self._warm_up_lock:
            if self._warmed_up:
                return
            self._check_model_is_served()
            try:
                self.score([ScoreRequest(_PROBE, "Hello")])
            except _Refused as error:  # a 4xx to a tiny, valid request: this server cannot score
                self._cannot_score = f"{error}; {_NO_SCORING}"
                logger.warning("%s", self._cannot_score)
            except BackendError as error:
                if not self._cannot_score:
                    raise  # the server is down or broken, not merely unable to score
                logger.warning("%s", error)
            self._ballot_form = self._find_ballot_form()
            self._warmed_up = True

    def ballot_path(self, labels: Sequence[str]) -> BallotPath:
        """``STRUCTURED`` where warm-up found structured outputs (and the server still takes them)
        and the labels make at most ``MAX_BALLOT_CHOICES`` ballots; else ``PARSED``."""
        return BallotPath.STRUCTURED if self._ballot_form and _ballot_fits(labels) else BallotPath.PARSED

    @property
    def ballot_form(self) -> BallotForm | None:
        """The structured-output form ballots are asked in (known after ``warm_up``), or None."""
        return self._ballot_form

    @property
    def scoring_problem(self) -> str | None:
        """Why this server cannot score (known after ``warm_up``), or None."""
        return self._cannot_score

    def close(self) -> None:
        self._client.close()

    # --- generation ------------------------------------------------------------------------

    def _generate_one(self, prompt: Prompt) -> str:
        form = self._ballot_form
        if prompt.ballot and form and _ballot_fits(prompt.ballot):
            try:
                text = self._chat(
                    prompt,
                    ballot_body(form, complete_ballots(prompt.ballot)),
                    # room for the longest ballot whatever the tokenizer; the reply ends with it
                    max_tokens=max(prompt.max_new_tokens, 4 * len(prompt.ballot)),
                )
                return cut_at_stop(ballot_reply(form, text), prompt.stop)
            except _Refused as error:  # the server stopped taking the form: free text from now on
                self._ballot_form = None
                logger.warning("%s; ranking reviews are free text from now on", error)
        text = self._chat(prompt, {}, max_tokens=prompt.max_new_tokens)
        answer = Generated(_strip_prefill(text, prompt.prefill), ran_out=ran_out(text))
        return cut_at_stop(answer, prompt.stop)

    def _chat(self, prompt: Prompt, fields: dict[str, Any], *, max_tokens: int) -> str:
        """One chat completion's content; ``fields`` join the request body (before ``extra_body``)."""
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
        extra: dict[str, Any] = {}
        if prompt.prefill:
            messages.append({"role": "assistant", "content": prompt.prefill})
            if self.options.continue_final_message:
                extra = {"continue_final_message": True, "add_generation_prompt": False}
        stop = list(prompt.stop[:MAX_STOPS]) or openai.omit
        reply = self._call(
            "/chat/completions",
            lambda: self._client.chat.completions.create(
                model=self.spec.model,
                messages=messages,  # type: ignore[arg-type]  # plain dicts of the SDK's shape
                max_tokens=max_tokens,
                temperature=prompt.temperature if prompt.temperature > 0 else self.options.temperature,
                seed=prompt.seed if prompt.temperature > 0 else openai.omit,
                stop=stop,
                extra_body=extra | fields | self.options.extra_body,
                extra_headers=self._headers,
            ),
        )
        try:
            text = reply.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError):
            raise BackendError(
                f"{self._where('/chat/completions')}: reply has no choices[0].message"
            ) from None
        # The server's own word on why it stopped: "length" is a reply cut at max_tokens.
        return Generated(str(text), ran_out=getattr(reply.choices[0], "finish_reason", None) == "length")

    def _find_ballot_form(self) -> BallotForm | None:
        """The first form of structured outputs this server honours, asked with one allowed reply."""
        for form in BALLOT_FORMS:
            try:
                text = self._chat(
                    _BALLOT_PROBE,
                    ballot_body(form, [_BALLOT_PROBE_CHOICE]),
                    max_tokens=_BALLOT_PROBE.max_new_tokens,
                )
            except BackendError as error:  # refused, or a reply of another shape: not this form
                logger.debug("%s: no structured outputs as %s: %s", self._where(""), form, error)
                continue
            if ballot_reply(form, text).strip() == _BALLOT_PROBE_CHOICE:
                logger.info("%s: ballots by structured outputs (%s)", self._where(""), form)
                return form
        logger.info("%s: no structured outputs; ranking reviews are free text", self._where(""))
        return None

    # --- scoring ---------------------------------------------------------------------------

    def _score_all(self, requests: list[ScoreRequest]) -> list[float]:
        scoring = self._scoring_form()
        if scoring.form == "tokens":
            return self._score_tokens(requests)
        return self._score_text(requests)

    def _scoring_form(self) -> _Scoring:
        """Tokens where the server renders the chat template (vLLM's /tokenize), else text; found once."""
        with self._probe_lock:
            if self._scoring is None:
                try:
                    self._tokenize({"messages": [{"role": "user", "content": "Hi"}]})
                    self._scoring = _Scoring("tokens")
                except _Refused:  # no /tokenize here, or a model without a chat template
                    self._scoring = _Scoring("text")
                logger.info("%s: scoring with %s prompts", self._where(""), self._scoring.form)
            return self._scoring

    def _score_tokens(self, requests: list[ScoreRequest]) -> list[float]:
        """As TransformersBackend: chat template + prefill, continuation tokenized apart, exact ids."""
        prompts = list(dict.fromkeys(r.prompt for r in requests))
        texts = list(dict.fromkeys(r.continuation for r in requests))
        tokenized = self._each(
            self._tokenize, [_chat_body(p) for p in prompts] + [_text_body(t) for t in texts]
        )
        context = dict(zip(prompts, tokenized[: len(prompts)], strict=True))
        continuation = dict(zip(texts, tokenized[len(prompts) :], strict=True))
        rows = [(context[r.prompt], continuation[r.continuation]) for r in requests]
        choices = self._echo([c + t for c, t in rows if t])
        scores, index = [], 0
        for ctx, cont in rows:
            if not cont:
                scores.append(EMPTY_CONTINUATION_SCORE)
                continue
            values = self._logprobs(choices[index]).token_logprobs or []
            index += 1
            scores.append(self._checked_mean(values[len(ctx) : len(ctx) + len(cont)]))
        return scores

    def _score_text(self, requests: list[ScoreRequest]) -> list[float]:
        """The plain transcript (models without a chat template; servers without /tokenize)."""
        contexts = [render_transcript(r.prompt) for r in requests]
        # As TransformersBackend: after a bare "Assistant:" the answer starts with a space.
        texts = [
            " " + r.continuation if not r.prompt.prefill and r.continuation[:1].isalnum() else r.continuation
            for r in requests
        ]
        choices = self._echo([c + t for c, t in zip(contexts, texts, strict=True)])
        scores = []
        for choice, context, text in zip(choices, contexts, texts, strict=True):
            logprobs = self._logprobs(choice)
            offsets, values = logprobs.text_offset or [], logprobs.token_logprobs or []
            end = len(context) + len(text)  # tokens from here on were generated (max_tokens=1)
            # The continuation starts in the last token that begins at or before it.
            first = max((i for i, at in enumerate(offsets) if at <= len(context)), default=0)
            scores.append(
                self._checked_mean([v for v, at in zip(values, offsets, strict=False) if at < end][first:])
            )
        return scores

    def _echo(self, prompts: list[list[int]] | list[str]) -> list[Any]:
        """One /completions request echoing every prompt's log-probs; the choices in prompt order."""
        reply = self._call(
            "/completions",
            lambda: self._client.completions.create(
                model=self.spec.model,
                prompt=prompts,
                echo=True,
                logprobs=1,
                max_tokens=1,  # some vLLM versions refuse 0; the generated token is not counted
                temperature=0.0,
                extra_body=self.options.extra_body,
                extra_headers=self._headers,
            ),
            scoring=True,
        )
        choices = sorted(reply.choices or [], key=lambda c: c.index)
        if len(choices) != len(prompts):
            self._refuse_scoring(f"{len(choices)} choices for {len(prompts)} prompts")
        return choices

    def _logprobs(self, choice: Any) -> Any:
        logprobs = getattr(choice, "logprobs", None)
        if logprobs is None or not logprobs.token_logprobs:
            self._refuse_scoring("no prompt logprobs in the reply")
        return logprobs

    def _checked_mean(self, values: Sequence[float | None]) -> float:
        try:
            return _mean(values)
        except ValueError:
            raise BackendError(f"{self._where('/completions')}: no logprobs for the continuation") from None

    def _refuse_scoring(self, why: str) -> None:
        self._cannot_score = f"{self._where('/completions')} cannot score: {why}; {_NO_SCORING}"
        raise BackendError(self._cannot_score)

    def _tokenize(self, body: dict[str, Any]) -> list[int]:
        """Token ids from vLLM's /tokenize (at the server's root, beside /v1)."""
        root = self.base_url.removesuffix("/v1")
        reply = self._call(
            "/tokenize",
            lambda: self._client.post(
                f"{root}/tokenize",
                cast_to=object,
                body={"model": self.spec.model} | body,
                options={"headers": self._headers},
            ),
            url=f"{root}/tokenize",
        )
        tokens = reply.get("tokens") if isinstance(reply, dict) else None
        if not isinstance(tokens, list) or not tokens:  # e.g. llama.cpp's /tokenize, which wants "content"
            raise _Refused(f"{root}/tokenize: reply has no tokens")
        return [int(t) for t in tokens]

    # --- requests ----------------------------------------------------------------------------

    def _check_model_is_served(self) -> None:
        try:
            served = [
                m.id
                for m in self._call("/models", lambda: self._client.models.list(extra_headers=self._headers))
            ]
        except _Refused:
            return  # a server without /models: the first real call will tell
        if served and self.spec.model not in served:
            raise BackendError(
                f"{self._where('/models')}: the server serves {', '.join(served)}, not {self.spec.model!r}; "
                "check the member's model (vLLM: --served-model-name)"
            )

    def _each(self, one: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        if len(items) <= 1:
            return [one(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(len(items), self.options.max_concurrency)) as pool:
            return list(pool.map(one, items))

    def _where(self, path: str, url: str | None = None) -> str:
        return f"model {self.spec.model!r} at {url or self.base_url + path}"

    def _call(
        self, path: str, send: Callable[[], _R], *, scoring: bool = False, url: str | None = None
    ) -> _R:
        """``send()`` (the SDK retries it) in a concurrency slot; its errors as BackendErrors."""
        where = self._where(path, url)
        try:
            with self._slots:
                return send()
        except openai.APIStatusError as error:
            last = f"HTTP {error.status_code}: {error.response.text[:_ERROR_TEXT_CHARS]}"
            if error.status_code in (408, 409, 429) or error.status_code >= 500:
                raise BackendError(
                    f"{where} failed after {self.options.max_retries + 1} attempts: {last}"
                ) from None
            if scoring and error.status_code in (404, 405, 501):  # no such endpoint: never will
                self._refuse_scoring(f"refused the request: {last}")
            raise _Refused(f"{where} refused the request: {last}") from None
        except openai.APITimeoutError:
            raise BackendError(
                f"{where}: Timeout, no reply within {self.timeout_s:g} s "
                f"({self.options.max_retries + 1} attempts)"
            ) from None
        except openai.APIConnectionError as error:
            cause = error.__cause__ or error
            raise BackendError(
                f"{where} failed after {self.options.max_retries + 1} attempts: "
                f"{type(cause).__name__}: {cause}"
            ) from None


class _Refused(BackendError):
    """The server answered with a 4xx other than 408/409/429: retrying will not help."""


def _chat_body(prompt: Prompt) -> dict[str, Any]:
    """A /tokenize body rendering ``prompt`` with the chat template, ending with its prefill."""
    messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
    if prompt.prefill:
        messages.append({"role": "assistant", "content": prompt.prefill})
        return {"messages": messages, "add_generation_prompt": False, "continue_final_message": True}
    return {"messages": messages, "add_generation_prompt": True}


def _text_body(text: str) -> dict[str, Any]:
    return {"prompt": text, "add_special_tokens": False}
