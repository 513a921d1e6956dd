"""What a model backend is: the prompts it takes, its interface, and the registry of backends.

Prompt builders (``pipeline.prompts``) produce ``Prompt``s; backends render them
either with the model's chat template or, for base models without one, as a plain
transcript (``render_transcript``).

``BACKENDS`` is the one list of backend names. Each entry says which class builds
it (imported lazily by workers, so a client never imports torch), which options a
committee member may give it (a pydantic model that refuses unknown keys) and what
it can do (``Capability``): callers check those declarations, never probe objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.ballot_grammar import BallotPath
from pipeline.errors import ConfigError
from pipeline.wire import json_of

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Prompt:
    """A chat prompt. ``prefill`` is text the model's answer is forced to start with.

    ``temperature`` 0 asks for the greedy answer; above 0 for a sample, drawn from a
    generator seeded with ``seed`` (same prompt and seed, same sample, where the
    backend can promise it).

    ``ballot``: the labels of a ranking to write. A backend with ``Capability.BALLOT``
    writes, where it can (``WritesBallots.ballot_path``), nothing but a complete
    strict ballot of them, best first ("B > A > C", each label once, the model
    choosing the order); others, and it where it cannot, ignore it and write text.
    """

    messages: tuple[Message, ...]
    prefill: str = ""
    max_new_tokens: int = 48
    stop: tuple[str, ...] = field(default_factory=tuple)
    temperature: float = 0.0
    seed: int = 0
    ballot: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return json_of(self)


@dataclass(frozen=True)
class ScoreRequest:
    """Score ``continuation`` as the model's answer to ``prompt``.

    The backend returns the mean log-probability per token (natural log, <= 0)
    of ``continuation`` following the rendered prompt (prefill included).
    """

    prompt: Prompt
    continuation: str


def render_transcript(prompt: Prompt) -> str:
    """Render a prompt as plain text for base models that have no chat template.

    System text comes first, then alternating ``User:`` / ``Assistant:`` lines; the
    text ends with ``Assistant:`` and the prefill, where the model continues.
    """
    lines: list[str] = []
    for message in prompt.messages:
        if message.role == "system":
            lines.append(message.content.strip())
            lines.append("")
        elif message.role == "user":
            lines.append(f"User: {message.content.strip()}")
        else:
            lines.append(f"Assistant: {message.content.strip()}")
    prefix = "Assistant:" + (" " + prompt.prefill if prompt.prefill else "")
    return "\n".join(lines + [prefix])


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` before its first stop string that follows the leading whitespace, stripped (a
    model may write a stop string at once, before its answer; a backend may return the stop
    string, or run past it). Text that ran into its token limit (``Generated``) keeps saying so
    unless a stop string ended it first."""
    text_ = text.lstrip()
    cut = min((i for s in stop if s and (i := text_.find(s)) >= 0), default=len(text_))
    kept = text_[:cut].strip()
    return Generated(kept, ran_out=True) if ran_out(text) and cut == len(text_) else kept


class Generated(str):
    """A generation that ran into its prompt's ``max_new_tokens`` (``ran_out``): what a chat
    client reads as ``finish_reason: "length"``. Backends that can tell return one; any other
    str counts as an answer the model ended itself (or a stop string ended)."""

    ran_out: bool

    def __new__(cls, text: str, *, ran_out: bool) -> Generated:
        made = super().__new__(cls, text)
        made.ran_out = ran_out
        return made


def ran_out(text: str) -> bool:
    """Whether ``text`` was cut by its token limit rather than ended (see ``Generated``)."""
    return isinstance(text, Generated) and text.ran_out


class Backend(Protocol):
    """What the pipeline needs of a model; ``workers.backends`` implements it."""

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        """Each prompt's continuation after its prefill (prefill not included): greedy, or
        sampled at the prompt's ``temperature``."""
        ...

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """Mean per-token log-probability of each continuation (natural log, <= 0)."""
        ...


class PairJudge(Protocol):
    """A backend with ``Capability.COMPARE``: judges two answers directly (a cross-encoder)."""

    def compare(self, context: str, first: str, second: str) -> float:
        """P(``first`` is the better answer to ``context``), in (0, 1)."""
        ...


class WritesBallots(Protocol):
    """A backend with ``Capability.BALLOT``: its ``generate`` honours ``Prompt.ballot`` where it can."""

    def ballot_path(self, labels: Sequence[str]) -> BallotPath:
        """How it writes a ballot of ``labels`` now: ``CONSTRAINED`` or ``STRUCTURED`` when it honours
        ``Prompt.ballot``, ``PARSED`` when it writes free text (a tokenizer without single-token
        labels, a server without structured outputs or one that stopped taking them, too many
        labels). Asked after the call: a path a backend gives up on is never reported for text
        written without it."""
        ...


class WarmsUp(Protocol):
    """A backend with ``Capability.WARM_UP``: one cheap call after loading pays for lazy set-up."""

    def warm_up(self) -> None: ...


class Capability(StrEnum):
    GENERATE = "generate"  # Backend.generate: greedy continuations
    SCORE = "score"  # Backend.score: mean log-probabilities of continuations
    BATCH = "batch"  # the worker gathers concurrent tasks' calls into batches (workers/batching.py)
    COMPARE = "compare"  # PairJudge.compare: a pairwise judge without a prompt
    WARM_UP = "warm_up"  # WarmsUp.warm_up: called once after loading
    BALLOT = "ballot"  # WritesBallots: generate() writes only complete ballots for Prompt.ballot


# --- options: one model per backend; today's names and defaults --------------------------------


class BackendOptions(BaseModel):
    """A member's ``options``; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def added_capabilities(self) -> frozenset[Capability]:
        """Capabilities these options switch on beyond the backend's declared ones (none by default)."""
        return frozenset()


class TransformersOptions(BackendOptions):
    device_map: Literal["auto"] | None = None  # "auto": one model spread over several GPUs
    batch_size: int = Field(default=32, ge=1)  # rows per forward pass, at most
    prefix_cache: int = Field(default=8, ge=0)  # prompts whose keys/values are kept for scoring
    prefix_cache_mb: float = Field(default=256, gt=0)  # and the most memory they may hold, in MiB
    cache_dir: str | None = None  # converted offline aliases; default: the worker's model cache


class OpenAIOptions(BackendOptions):
    """See ``workers/backends/openai.py`` for what each option does."""

    base_url: str = Field(min_length=1)
    api_key_env: str | None = None  # environment variable holding the API key
    timeout_s: float | None = Field(default=None, gt=0)  # per request; None: the member's time limit
    max_retries: int = Field(default=3, ge=0, le=20)  # the openai SDK's (jittered backoff, Retry-After)
    max_concurrency: int = Field(default=4, ge=1, le=256)
    temperature: float = Field(default=0.0, ge=0, le=2)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    continue_final_message: bool = False

    def added_capabilities(self) -> frozenset[Capability]:
        # Warm-up checks the server serves the model and probes scoring once, at worker start.
        return frozenset({Capability.WARM_UP})


class CrossEncoderOptions(BackendOptions):
    """The cross-encoder judge takes no options."""


class ScriptedOptions(BackendOptions):
    """See ``workers/backends/scripted.py`` for what each option does."""

    replies: tuple[str, ...] = ()
    review_reply: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    fail: str | None = None
    delay_s: float = Field(default=0.0, ge=0)
    batch: bool = False
    ballot: Literal["constrained", "structured"] | None = None

    def added_capabilities(self) -> frozenset[Capability]:
        added: set[Capability] = set()
        if self.batch:
            added.add(Capability.BATCH)
        if self.ballot:
            added.add(Capability.BALLOT)
        return frozenset(added)


_Options = TypeVar("_Options", bound=BackendOptions)


def parse_options(model: type[_Options], raw: Mapping[str, object], *, backend: str) -> _Options:
    """``raw`` checked against ``model``; a ConfigError names each bad key and the backend."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problems = []
        for e in error.errors():
            key = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                known = ", ".join(model.model_fields) or "none"
                problems.append(f"unknown option {key!r} for backend {backend!r} (its options: {known})")
            else:
                problems.append(f"option {key!r} of backend {backend!r}: {e['msg']}")
        raise ConfigError("; ".join(problems)) from None


# --- the registry ------------------------------------------------------------------------------

TEST_BACKENDS_SETTING = "PEERBLEND_TEST_BACKENDS=1"


@dataclass(frozen=True)
class BackendInfo:
    """One backend: the class that builds it, the options it takes, what it can do."""

    name: str
    factory: str  # "module:Class", imported by workers only when a member needs it
    options: type[BackendOptions]
    capabilities: frozenset[Capability]
    test_only: bool = False  # offered only where test backends are enabled

    def parse_options(self, raw: Mapping[str, object]) -> BackendOptions:
        return parse_options(self.options, raw, backend=self.name)

    def capabilities_with(self, raw_options: Mapping[str, object]) -> frozenset[Capability]:
        """The declared capabilities plus those the member's options switch on."""
        return self.capabilities | self.parse_options(raw_options).added_capabilities()


_GENERATES_AND_SCORES = frozenset({Capability.GENERATE, Capability.SCORE})

BACKENDS: Mapping[str, BackendInfo] = MappingProxyType(
    {
        info.name: info
        for info in (
            BackendInfo(
                name="transformers",
                factory="workers.backends.hf:TransformersBackend",
                options=TransformersOptions,
                capabilities=_GENERATES_AND_SCORES
                | {Capability.BATCH, Capability.WARM_UP, Capability.BALLOT},
            ),
            BackendInfo(
                name="openai",  # remote servers batch on their side; structured outputs found at warm-up
                factory="workers.backends.openai:OpenAIBackend",
                options=OpenAIOptions,
                capabilities=_GENERATES_AND_SCORES | {Capability.BALLOT},
            ),
            BackendInfo(
                name="cross-encoder",  # a pairwise judge only
                factory="workers.backends.cross_encoder:CrossEncoderBackend",
                options=CrossEncoderOptions,
                capabilities=frozenset({Capability.COMPARE}),
            ),
            BackendInfo(
                name="scripted",  # batched only with options.batch (see ScriptedOptions)
                factory="workers.backends.scripted:ScriptedBackend",
                options=ScriptedOptions,
                capabilities=_GENERATES_AND_SCORES,
                test_only=True,
            ),
        )
    }
)


def backend_names(*, test_backends: bool = False) -> list[str]:
    """The backends a committee may name, sorted; test backends only when enabled."""
    return sorted(name for name, info in BACKENDS.items() if test_backends or not info.test_only)


def backend_info(name: str) -> BackendInfo:
    """The registry entry for ``name``; a ConfigError lists the known backends when there is none."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; known backends: {', '.join(backend_names())}") from None


def enabled_backend(name: str, *, test_backends: bool) -> BackendInfo:
    """``backend_info(name)``, refused for a test backend unless test backends are enabled."""
    info = backend_info(name)
    if info.test_only and not test_backends:
        raise ConfigError(
            f"backend {name!r} is a test backend; it is enabled only by {TEST_BACKENDS_SETTING} "
            f"(for users: {', '.join(backend_names())})"
        )
    return info
