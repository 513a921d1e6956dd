"""The committee: who answers, who reviews, who fuses, and on which queue.

Read from a TOML, YAML or JSON file (``load_committee``) or built in code; the
default offline committee (``default_committee``) runs the two small models
that ship as PyPI packages.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.backend import Capability, backend_info, enabled_backend
from pipeline.errors import ConfigError

# How a reviewer ranks the candidates (pipeline/stages.py):
# "ranking": free text after a prefilled "Ranking:";
# "likelihood": PMI of each answer (mean log-prob per token given the turn, minus given a content-free question);
# "likelihood-total": that PMI times the answer's length in words (the evidence of the whole answer, not per token);
# "verify": the reviewer's calibrated yes/no judgement that each answer is correct;
# "consistency": agreement (token F1) of each answer with the reviewer's own sampled answers.
ReviewMethod = Literal["ranking", "likelihood", "likelihood-total", "verify", "consistency"]
SCORING_METHODS: frozenset[str] = frozenset({"likelihood", "likelihood-total", "verify"})
Role = Literal["generator", "reviewer", "aggregator", "judge"]  # judge: pairwise baseline only
AnswerStyle = Literal["concise", "terse"]


# Reviewer-weight modes fitted on a calibration split (their weights, and the member prior's, come from it).
CALIBRATED_MODES = ("calibrated", "calibrated-passage")


class FewShot(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    question: str
    answer: str


class Generation(BaseModel):
    """How a member generates: answer length, style, few-shot examples."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_new_tokens: int = Field(default=48, ge=1, le=4096)
    style: AnswerStyle = "concise"
    few_shot: tuple[FewShot, ...] = ()
    review_max_new_tokens: int = Field(default=16, ge=4, le=256)
    # review_method "consistency": how many answers the reviewer samples, and how hot
    consistency_samples: int = Field(default=4, ge=2, le=32)
    consistency_temperature: float = Field(default=0.7, gt=0, le=2)


class Member(BaseModel):
    """One committee member: a model behind a backend, served from one queue."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    backend: str  # a name in pipeline.backend.BACKENDS
    model: str = Field(min_length=1)
    queue: str = ""  # default: "peerblend.<name>"
    device: str = "cpu"
    dtype: str = "auto"
    roles: tuple[Role, ...] = ("generator", "reviewer")
    review_method: ReviewMethod = "likelihood"
    generation: Generation = Generation()
    # Most seconds one call of this member (an answer, a review, a judgement) may take; past
    # it the member is excluded from the turn with "timeout" recorded. None: the deployment's
    # PEERBLEND_GENERATION_TIME_LIMIT_S.
    timeout_s: float | None = Field(default=None, gt=0, le=24 * 3600)
    # checked against the backend's options model, also when left out (openai needs base_url)
    options: dict[str, object] = Field(default_factory=dict, validate_default=True)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, backend: str) -> str:
        try:
            backend_info(backend)
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return backend

    @field_validator("options")
    @classmethod
    def _options_fit_backend(cls, options: dict[str, object], info: ValidationInfo) -> dict[str, object]:
        if "backend" in info.data:  # else the backend is unknown, and that error is reported
            try:
                backend_info(info.data["backend"]).parse_options(options)
            except ConfigError as error:
                raise ValueError(str(error)) from None
        return options

    @model_validator(mode="after")
    def _default_queue(self) -> Member:
        if not self.queue:
            object.__setattr__(self, "queue", f"peerblend.{self.name}")
        return self

    @model_validator(mode="after")
    def _backend_can_play_roles(self) -> Member:
        can = self.capabilities
        for role in self.roles:
            needs = _role_needs(role, self.review_method)
            if not can & needs:
                raise ValueError(
                    f"role {role!r} needs a backend that can {' or '.join(sorted(needs))}; "
                    f"backend {self.backend!r} can {', '.join(sorted(can))}"
                )
        return self

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What this member's backend can do: declared in the registry, some switched on by options."""
        return backend_info(self.backend).capabilities_with(self.options)

    @field_validator("roles")
    @classmethod
    def _roles_not_empty(cls, roles: tuple[Role, ...]) -> tuple[Role, ...]:
        if not roles:
            raise ValueError("a member needs at least one role")
        return tuple(dict.fromkeys(roles))


def _role_needs(role: Role, review_method: ReviewMethod) -> frozenset[Capability]:
    """What a member in ``role`` needs of its backend: any one of these capabilities."""
    if role == "judge":  # an LLM judge scores " A" and " B"; a cross-encoder compares
        return frozenset({Capability.SCORE, Capability.COMPARE})
    if role == "reviewer" and review_method in SCORING_METHODS:
        return frozenset({Capability.SCORE})
    return frozenset({Capability.GENERATE})


class Committee(BaseModel):
    """The members, and how their reviews are aggregated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "default"
    members: tuple[Member, ...]
    aggregator: str | None = None  # member that fuses the top-K, when fusing
    pairwise_judge: str | None = None  # member judging pairs for method "pairwise" (default: first reviewer)
    top_k: int = Field(default=1, ge=1)  # candidates given to the aggregator
    exclude_self_votes: bool = False
    # p1 on a live conversation (its length unknown): rank with everyone for this many first turns.
    p1_live_rank_turns: int = Field(default=2, ge=1, le=100)
    # Borda weights per reviewer: "uniform"; "online" (agreement with the other reviewers so
    # far); "calibrated" (fitted on gold answers by `peerblend calibrate`). See pipeline/weights.py.
    # "learned": no Borda weights; the learned decision ranks (pipeline/learned.py).
    reviewer_weights: Literal["uniform", "online", "calibrated", "calibrated-passage", "learned"] = "uniform"
    # Add each member's calibrated quality (mean token F1 on a calibration run, `peerblend
    # calibrate`) to the Borda count as one more ballot. See pipeline/aggregate.py.
    member_prior: bool = False
    # Policy learned-route: ask everyone and review only for questions where the learned decision's
    # cross-validated gain over the member prior is at least this many F1 points (x 100); elsewhere
    # the prior's top member answers alone. 0: route only where the judges add nothing at all.
    route_min_gain: float = Field(default=1.0, ge=0, le=100)
    # Reviewers of one judgement (pipeline.aggregate.judgement_key) are reviewed once per turn,
    # by the group's first reviewer, its ballot cast for the group; false: each reviewer runs its
    # own review (the same ballot again, or another shuffle or sample of one judge).
    one_review_per_voter: bool = True
    context_budget_tokens: int = Field(default=512, ge=0)  # earlier turns, estimated tokens
    passage_budget_tokens: int = Field(default=768, ge=0)  # grounding passage, estimated tokens

    @model_validator(mode="after")
    def _check(self) -> Committee:
        names = [m.name for m in self.members]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"member names must be unique; repeated: {', '.join(duplicates)}")
        if len(self.generators) < 2:
            raise ValueError(f"a committee needs at least two generators, got {len(self.generators)}")
        if not self.reviewers:
            raise ValueError("a committee needs at least one reviewer")
        for role, name in (("aggregator", self.aggregator), ("pairwise_judge", self.pairwise_judge)):
            if name is not None and name not in names:
                raise ValueError(f"{role} {name!r} is not a member ({', '.join(names)})")
        return self

    @property
    def judge(self) -> str | None:
        """The member that judges candidate pairs for the pairwise baseline."""
        return self.pairwise_judge or (self.reviewers[0] if self.reviewers else None)

    @property
    def generators(self) -> list[str]:
        return [m.name for m in self.members if "generator" in m.roles]

    @property
    def reviewers(self) -> list[str]:
        return [m.name for m in self.members if "reviewer" in m.roles]

    @property
    def queues(self) -> list[str]:
        return sorted({m.queue for m in self.members})

    def member(self, name: str) -> Member:
        for member in self.members:
            if member.name == name:
                return member
        raise ConfigError(
            f"unknown member {name!r}; committee {self.name!r} has {', '.join(m.name for m in self.members)}"
        )


def committee_from_dict(data: object, *, where: str = "committee", test_backends: bool = False) -> Committee:
    """Validate a parsed config; errors name the field that is wrong.

    ``test_backends``: whether members may use a test backend (``Settings.test_backends``).
    """
    try:
        committee = Committee.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in error.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None
    require_enabled_backends(committee, test_backends=test_backends, where=where)
    return committee


def require_enabled_backends(committee: Committee, *, test_backends: bool, where: str = "committee") -> None:
    """Refuse a member on a test backend unless test backends are enabled (ConfigError)."""
    for index, member in enumerate(committee.members):
        try:
            enabled_backend(member.backend, test_backends=test_backends)
        except ConfigError as error:
            raise ConfigError(f"{where}: members.{index}.backend ({member.name}): {error}") from None


def load_committee(path: str | Path, *, test_backends: bool = False) -> Committee:
    """Load a committee from a .toml, .yaml/.yml or .json file (``test_backends`` as in committee_from_dict)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read committee file {path}: {error.strerror}") from None
    try:
        if path.suffix == ".toml":
            data: object = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"committee file {path}: use .toml, .yaml, .yml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as error:
        raise ConfigError(f"committee file {path} is not valid {path.suffix[1:]}: {error}") from None
    return committee_from_dict(data, where=str(path), test_backends=test_backends)


# Few-shot examples for the base model: general-knowledge pairs written for this
# project (not taken from any evaluation set), short answers on purpose.
_FEW_SHOT_A = (
    FewShot(question="Who painted the Mona Lisa?", answer="Leonardo da Vinci"),
    FewShot(question="In which year did it become famous after a theft?", answer="1911"),
    FewShot(question="What is the capital of Australia?", answer="Canberra"),
)
_FEW_SHOT_B = (
    FewShot(question="Which planet is known as the Red Planet?", answer="Mars"),
    FewShot(question="How many moons does it have?", answer="Two"),
    FewShot(question="Who wrote the play Hamlet?", answer="William Shakespeare"),
)


def default_committee() -> Committee:
    """Four members over the two offline models, named for what differs between them.

    Reviewers: smollm2-concise (SmolLM2) and gemma3-fewshot-a/-b (Gemma, one judgement,
    computed once), by likelihood (PMI). smollm2-terse only answers: as a free-text ranker it
    parsed 0 of 137 ballots on held-out data and was the slowest reviewer. Decided by the
    learned decision packaged for this committee (``pipeline/data/learned-offline-4.json``).
    """
    return Committee(
        name="offline-4",
        members=(
            Member(name="smollm2-concise", backend="transformers", model="smollm2-135m"),
            Member(
                name="smollm2-terse",
                backend="transformers",
                model="smollm2-135m",
                roles=("generator",),
                review_method="ranking",  # what it would do if a committee file made it review
                generation=Generation(style="terse", max_new_tokens=24),
            ),
            Member(
                name="gemma3-fewshot-a",
                backend="transformers",
                model="gemma3-270m",
                generation=Generation(style="terse", max_new_tokens=24, few_shot=_FEW_SHOT_A),
            ),
            Member(
                name="gemma3-fewshot-b",
                backend="transformers",
                model="gemma3-270m",
                generation=Generation(style="terse", max_new_tokens=24, few_shot=_FEW_SHOT_B),
            ),
        ),
        aggregator="smollm2-concise",
        reviewer_weights="learned",
    )
