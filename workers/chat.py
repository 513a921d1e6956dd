"""The OpenAI chat-completions protocol as peerblend reads it: requests, model ids, errors.

Kept apart from the web app (``workers.serve``) so the mapping from messages to a
conversation is testable without a server.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.committee import Committee
from pipeline.context import Exchange
from pipeline.conversation import Limits
from pipeline.errors import InputError
from pipeline.plan import DEFAULT_METHOD, VARIANTS, method_named
from pipeline.policy import POLICIES
from pipeline.service.live import checked_question

# The ids ``start`` gives live conversations are uuid4 hex; this admits any plain token.
CONVERSATION_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


class ChatError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self, status: int, message: str, kind: str, code: str | None = None, param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.turn: tuple[str, int] | None = None  # (conversation id, turn index) the error is about

    def about(self, conversation_id: str, turn_index: int) -> ChatError:
        """This error, naming the turn it is about (a client can fetch or retry that turn)."""
        self.turn = (conversation_id, turn_index)
        return self


def error_body(error: ChatError) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message": error.message,
        "type": error.kind,
        "param": error.param,
        "code": error.code,
    }
    if error.turn is not None:  # extra fields: OpenAI's clients keep them on the error's body
        conversation_id, turn_index = error.turn
        body |= {
            "conversation_id": conversation_id,
            "turn_index": turn_index,
            "turn_url": f"/v1/conversations/{conversation_id}/turns/{turn_index}",
        }
    return {"error": body}


# An Idempotency-Key: printable ASCII, as the IETF draft and the payment APIs that use it allow.
REQUEST_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def request_key_of(header: str | None) -> str | None:
    """The request's Idempotency-Key, checked; ChatError 400 naming the header otherwise."""
    if header is None:
        return None
    if not REQUEST_KEY.fullmatch(header):
        raise _bad(
            "Idempotency-Key must be 1-255 printable ASCII characters without spaces", "Idempotency-Key"
        )
    return header


# strict: a known field of the wrong JSON type is refused ("stream": "yes" is not true).
class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


MAX_TOKENS = 4096
MAX_STOPS = 4  # as OpenAI allows


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool | None = False


class ChatRequest(BaseModel):
    """The fields peerblend reads. Sampling settings (temperature, top_p, ...) are accepted and
    ignored: the committee's members decide how they sample. Fields asking for something the
    blend cannot give (several choices, tool calls, a JSON format, log-probabilities) are
    refused by ``unsupported`` rather than silently ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str = Field(min_length=1, max_length=300)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False  # null, as OpenAI allows, is false
    stream_options: StreamOptions | None = None
    conversation_id: str | None = Field(default=None, max_length=64)  # extra_body: continue this one
    # Bound every member's answer (and the fusion's); the older and the newer name of one setting.
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    stop: str | list[str] | None = None
    n: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @property
    def token_limit(self) -> int | None:
        """The request's bound on answer tokens, if any (the smaller where both are given)."""
        given = [v for v in (self.max_tokens, self.max_completion_tokens) if v is not None]
        return min(given) if given else None

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


def unsupported(request: ChatRequest) -> ChatError | None:
    """A 400 naming the first field asking for what a blended answer cannot be, else None."""
    refusals = [
        (request.n not in (None, 1), "n", "one blended answer per request: n must be 1"),
        (bool(request.tools) or bool(request.functions), "tools", "tool calls are not supported"),
        (request.tool_choice not in (None, "none", "auto"), "tool_choice", "tool calls are not supported"),
        (
            request.response_format not in (None, {"type": "text"}),
            "response_format",
            "only text answers are supported (response_format type text)",
        ),
        (
            bool(request.logprobs) or request.top_logprobs is not None,
            "logprobs",
            "log-probabilities are not returned",
        ),
        (len(request.stops) > MAX_STOPS, "stop", f"at most {MAX_STOPS} stop sequences"),
        (any(not s for s in request.stops), "stop", "a stop sequence must not be empty"),
    ]
    for refused, param, message in refusals:
        if refused:
            return _bad(f"invalid request: {param}: {message}", param)
    return None


def parse_request(raw: bytes) -> ChatRequest:
    """A request body as a ChatRequest; ChatError 400 naming the first field that is wrong.

    JSON nested too deep for the parser is refused like any other malformed body.
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # a UnicodeDecodeError is a ValueError
        raise _bad("invalid request: the body is not valid JSON", None) from None
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        param = str(first["loc"][0]) if first["loc"] else None
        raise _bad(f"invalid request: {where or 'the body'}: {first['msg']}", param) from None
    refused = unsupported(request)
    if refused is not None:
        raise refused
    return request


def check_text(limits: Limits, system: str | None, exchanges: list[Exchange], question: str) -> None:
    """ChatError 400 for any text of the request over the limits or unstorable (a NUL, a lone
    surrogate): checked before anything is stored, so a refused request leaves nothing behind."""
    try:
        checked_question(limits, question)
        limits.check_context(passage=None, system=system, history=exchanges)
    except InputError as error:
        raise _bad(str(error), "messages") from None


def conversation_id_of(body: str | None, header: str | None) -> str | None:
    """The conversation a request names: the body's ``conversation_id``, else the header's."""
    for value, param in ((body, "conversation_id"), (header, "X-Peerblend-Conversation")):
        if value:
            if not CONVERSATION_ID.fullmatch(value):
                raise _bad(f"{param} must be a conversation id: up to 64 letters, digits, '-' or '_'", param)
            return value
    return None


def model_ids(committee: Committee) -> list[str]:
    """The committee's model ids: the plain blend (the default method), each policy, then each other
    method (one id per generator for a method of one member: each member alone)."""
    name = committee.name
    others = [m for m in VARIANTS.values() if m.name != DEFAULT_METHOD]
    return [
        name,
        *(f"{name}:{policy}" for policy in POLICIES if policy != "full"),
        *(f"{name}:{m.name}" for m in others if not m.takes_member),
        *(f"{name}:{m.name}:{member}" for m in others if m.takes_member for member in committee.generators),
    ]


def parse_model(model: str, committee: Committee) -> tuple[str, str]:
    """(method, policy) of a model id; ChatError 404 for an id this server does not serve."""
    if model not in model_ids(committee):
        raise ChatError(
            404,
            f"model {model!r} is not served here; GET /v1/models lists the ids ({committee.name}, ...)",
            "invalid_request_error",
            code="model_not_found",
            param="model",
        )
    variant = model.removeprefix(committee.name).removeprefix(":")
    if variant in POLICIES:
        return DEFAULT_METHOD, variant
    if method_named(variant) is not None:  # a method: its default policy
        return variant, "full"
    return DEFAULT_METHOD, "full"


def conversation_of(messages: list[ChatMessage]) -> tuple[str | None, list[Exchange], str]:
    """(system text or None, earlier exchanges, the question) of a request's messages.

    System (and developer) messages are joined; the others must alternate user,
    assistant, ..., ending with the user's question. Tool messages are refused.
    """
    system = "\n\n".join(m.text for m in messages if m.role in ("system", "developer")) or None
    dialogue = [m for m in messages if m.role not in ("system", "developer")]
    if any(m.role in ("tool", "function") for m in dialogue):
        raise _bad("tool and function messages are not supported by a blend", "messages")
    if not dialogue or dialogue[-1].role != "user":
        raise _bad("the last message must be the user's question", "messages")
    for index, message in enumerate(dialogue):
        expected = "user" if index % 2 == 0 else "assistant"
        if message.role != expected:
            raise _bad(
                f"messages must alternate user and assistant; message {index + 1} is {message.role}",
                "messages",
            )
    question = dialogue[-1].text.strip()
    if not question:
        raise _bad("the question (the last user message) is empty", "messages")
    pairs = dialogue[:-1]
    exchanges = [Exchange(pairs[i].text, pairs[i + 1].text) for i in range(0, len(pairs), 2)]
    return system, exchanges, question


def _bad(message: str, param: str | None) -> ChatError:
    return ChatError(400, message, "invalid_request_error", param=param)
