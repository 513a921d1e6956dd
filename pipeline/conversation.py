"""Conversations as users submit them, validated before anything is enqueued."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import InputError


@dataclass(frozen=True)
class Limits:
    """How much one conversation may carry (characters, turns); beyond them submit refuses it.

    Everything a turn carries travels in its task messages and results, so an
    unbounded question would fill Redis and the models' context alike.
    """

    max_question_chars: int = 8_000
    max_passage_chars: int = 100_000
    max_turns: int = 200

    def check(self, conversation: Conversation) -> None:
        """Raise InputError naming the first thing over its limit (or holding unstorable text)."""
        name = conversation.id or "(no id)"
        if len(conversation.questions) > self.max_turns:
            raise InputError(
                f"conversation {name} has {len(conversation.questions)} turns; the limit is {self.max_turns}"
            )
        for index, question in enumerate(conversation.questions, start=1):
            _check_text(question.text, f"question {index} of conversation {name}", self.max_question_chars)
            for gold in question.gold:
                _check_text(gold, f"a gold answer of question {index} of {name}", self.max_question_chars)
        if conversation.source is not None:
            _check_text(conversation.source, f"the source of conversation {name}", MAX_ID_CHARS)
        if conversation.passage is not None:
            _check_text(conversation.passage, f"the passage of conversation {name}", self.max_passage_chars)

    def check_context(self, *, passage: object, system: object, history: Sequence[Any]) -> None:
        """A live conversation's passage, system message and earlier exchanges (``Exchange``-like)."""
        for name, value in (("passage", passage), ("system message", system)):
            if value is not None and not isinstance(value, str):
                raise InputError(f"the {name} must be a string, got {type(value).__name__}")
        if passage is not None:
            _check_text(str(passage), "the passage", self.max_passage_chars)
        if system is not None:
            _check_text(str(system), "the system message", self.max_question_chars)
        if len(history) > self.max_turns:
            raise InputError(f"history has {len(history)} exchanges; the limit is {self.max_turns}")
        for index, exchange in enumerate(history, start=1):
            _check_text(exchange.question, f"history question {index}", self.max_question_chars)
            _check_text(exchange.answer, f"history answer {index}", self.max_passage_chars)

    def check_question(self, text: str, what: str = "the question") -> None:
        """One question on its own (a live turn's, a chat request's), named ``what`` in the error."""
        _check_text(text, what, self.max_question_chars)


def _check_text(text: str, what: str, limit: int) -> None:
    if len(text) > limit:
        raise InputError(f"{what} has {len(text):,} characters; the limit is {limit:,}")
    if "\x00" in text:
        raise InputError(f"{what} contains a NUL character, which cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            f"{what} contains a lone surrogate (invalid Unicode), which cannot be stored"
        ) from None


@dataclass(frozen=True)
class Question:
    """One user turn: the question and, when known, its gold answers (for scoring)."""

    text: str
    gold: tuple[str, ...] = ()


@dataclass(frozen=True)
class Conversation:
    """A multi-turn conversation: questions in order, an optional grounding passage."""

    questions: tuple[Question, ...]
    id: str | None = None  # the dataset's own id, if any
    passage: str | None = None
    source: str | None = None  # dataset name or file, for reports
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.questions:
            raise InputError(f"conversation {self.id or '(no id)'} has no questions")
        for index, question in enumerate(self.questions, start=1):
            if not isinstance(question.text, str) or not question.text.strip():
                raise InputError(f"question {index} of conversation {self.id!r} is empty")


def conversation_from_json(data: object, *, where: str = "conversation") -> Conversation:
    """Build a Conversation from user JSON.

    Accepted shapes: ``{"turns": ["q1", "q2"]}``, ``{"turns": [{"question": "q1",
    "answers": ["gold"]}]}`` (``questions`` is accepted as a synonym of ``turns``),
    with optional ``id``, ``passage`` and ``source``; or a bare list of turns.
    ``where`` names the input in error messages (a file name, a record number).
    """
    if isinstance(data, list):
        data = {"turns": data}
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected an object with 'turns', got {type(data).__name__}")
    turns = data.get("turns", data.get("questions"))
    if turns is None:
        raise InputError(f"{where}: missing 'turns' (a list of questions)")
    if not isinstance(turns, list):
        raise InputError(f"{where}: 'turns' must be a list, got {type(turns).__name__}")
    questions = tuple(_question_from_json(t, where=f"{where}, turn {i}") for i, t in enumerate(turns, 1))
    passage = data.get("passage")
    if passage is not None and not isinstance(passage, str):
        raise InputError(f"{where}: 'passage' must be a string")
    conv_id = _checked_id(data.get("id"), where)
    source = data.get("source")
    if not questions:
        raise InputError(f"{where}: 'turns' is empty; a conversation needs at least one question")
    return Conversation(
        questions=questions,
        id=conv_id,
        passage=passage,
        source=source if isinstance(source, str) else None,
    )


MAX_ID_CHARS = 200


def _checked_id(value: object, where: str) -> str | None:
    """The conversation's own id as a short printable string (an integer id is written out)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{where}: 'id' must be a string or an integer")
    if isinstance(value, int):
        if abs(value) >= 10**18:
            raise InputError(f"{where}: 'id' is an integer of more than 18 digits; send it as a string")
        return str(value)
    if not 1 <= len(value) <= MAX_ID_CHARS or not value.isprintable():
        raise InputError(f"{where}: 'id' must be 1 to {MAX_ID_CHARS} printable characters")
    return value


def _question_from_json(turn: object, *, where: str) -> Question:
    text: object
    gold: object
    if isinstance(turn, str):
        text, gold = turn, []
    elif isinstance(turn, dict):
        text = turn.get("question")
        gold = turn.get("answers", turn.get("gold", []))
        if isinstance(gold, str):
            gold = [gold]
    else:
        raise InputError(
            f"{where}: expected a string or an object with 'question', got {type(turn).__name__}"
        )
    if not isinstance(text, str):
        raise InputError(f"{where}: 'question' must be a string")
    if not text.strip():
        raise InputError(f"{where}: the question is empty")
    if not isinstance(gold, list) or not all(isinstance(g, str) for g in gold):
        raise InputError(f"{where}: 'answers' must be a list of strings")
    return Question(text=text.strip(), gold=tuple(g for g in gold if g.strip()))
