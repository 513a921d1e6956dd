"""Prompts for the three roles: generator, reviewer, aggregator.

Written for small models as much as large ones: short instructions, anonymous
labels, and never an example ranking order (small models copy it).
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.backend import Message, Prompt
from pipeline.committee import AnswerStyle, FewShot
from pipeline.context import Exchange

_STYLE = {
    "concise": "Give a concise, accurate answer in one short sentence.",
    "terse": "Reply with only the answer itself: a name, a number, a date or a few words.",
}
_STOP = {"concise": ("\nUser:", "\n\n"), "terse": ("\n",)}

RANKING_PREFIX = "Ranking:"
CONTENT_FREE_QUESTION = "N/A"


def _system(instruction: str, passage: str | None) -> Message:
    if passage:
        instruction += f"\n\nUse this passage to answer:\n{passage}"
    return Message("system", instruction)


def _history_messages(history: Sequence[Exchange]) -> list[Message]:
    messages: list[Message] = []
    for exchange in history:
        messages += [Message("user", exchange.question), Message("assistant", exchange.answer)]
    return messages


def generator_prompt(
    question: str,
    history: Sequence[Exchange],
    *,
    style: AnswerStyle = "concise",
    few_shot: Sequence[FewShot] = (),
    passage: str | None = None,
    max_new_tokens: int = 48,
    instructions: str | None = None,
) -> Prompt:
    """Ask a member to answer ``question`` given the conversation so far.

    ``instructions``: the user's own system message (a chat client's), after ours.
    """
    own = f"\n\n{instructions.strip()}" if instructions and instructions.strip() else ""
    system = _system(
        "You answer questions in a conversation. Follow-up questions refer to "
        f"earlier turns. {_STYLE[style]}{own}",
        passage,
    )
    shots = [Exchange(s.question, s.answer) for s in few_shot]
    messages = [system, *_history_messages([*shots, *history]), Message("user", question)]
    return Prompt(tuple(messages), max_new_tokens=max_new_tokens, stop=_STOP[style])


def quoted_candidate(text: str) -> str:
    """A candidate's text as it appears inside a review prompt: one line, no square brackets.

    Candidates are listed one per line as ``[A] text``; a newline or a bracketed
    label inside an answer could otherwise open a phantom candidate ("...\n[C] ...")
    or pose as the prompt's own structure.
    """
    return " ".join(text.split()).replace("[", "(").replace("]", ")")


def _transcript(history: Sequence[Exchange]) -> str:
    return "\n".join(f"User: {e.question}\nAssistant: {e.answer}" for e in history)


def ranking_prompt(
    question: str,
    history: Sequence[Exchange],
    labelled: Sequence[tuple[str, str]],
    *,
    passage: str | None = None,
    max_new_tokens: int = 16,
) -> Prompt:
    """Ask a reviewer to rank labelled candidates; the answer starts with RANKING_PREFIX.

    ``labelled``: (label, answer text) in the order this reviewer is shown them.
    """
    parts = []
    if history:
        parts.append("Conversation so far:\n" + _transcript(history))
    parts.append(f"Question: {question}")
    listed = "\n".join(f"[{label}] {quoted_candidate(text)}" for label, text in labelled)
    parts.append("Candidate answers:\n" + listed)
    parts.append(
        f"Rank all {len(labelled)} candidates from best to worst by accuracy, relevance, "
        "completeness and coherence. Reply with the labels only, best first, separated by '>'."
    )
    system = _system("You are a careful, impartial judge of answers.", passage)
    messages = (system, Message("user", "\n\n".join(parts)))
    return Prompt(messages, prefill=RANKING_PREFIX, max_new_tokens=max_new_tokens, stop=("\n",))


def likelihood_prompts(
    question: str, history: Sequence[Exchange], *, passage: str | None = None
) -> tuple[Prompt, Prompt]:
    """(conditional, content-free) prompts for PMI scoring of candidate answers.

    A candidate's score is its mean log-probability as the answer to the real
    question minus that under a content-free question, which removes how likely
    the text is in itself (short, common or self-generated phrasing).
    """
    instruction = "You answer questions in a conversation accurately."
    conditional = Prompt(
        (_system(instruction, passage), *_history_messages(history), Message("user", question))
    )
    content_free = Prompt((_system(instruction, None), Message("user", CONTENT_FREE_QUESTION)))
    return conditional, content_free


VERIFY_PREFIX = "Answer:"
VERIFY_YES, VERIFY_NO = " yes", " no"


def verification_prompts(
    question: str, history: Sequence[Exchange], answer: str, *, passage: str | None = None
) -> tuple[Prompt, Prompt]:
    """(conditional, content-free) prompts asking whether ``answer`` correctly answers the question.

    The reviewer is scored on continuing with VERIFY_YES or VERIFY_NO after VERIFY_PREFIX;
    nothing is generated. The content-free prompt asks the same about the same answer to the
    question CONTENT_FREE_QUESTION, with no history or passage: how much the reviewer says
    "yes" to this text whatever was asked (contextual calibration, per candidate).
    """

    def ask(q: str, h: Sequence[Exchange], p: str | None) -> Prompt:
        parts = ["Conversation so far:\n" + _transcript(h)] if h else []
        parts.append(f"Question: {q}")
        parts.append(f"Proposed answer: {quoted_candidate(answer)}")
        parts.append("Is the proposed answer correct? Reply with yes or no.")
        system = _system("You are a careful, impartial judge of answers.", p)
        return Prompt((system, Message("user", "\n\n".join(parts))), prefill=VERIFY_PREFIX, max_new_tokens=1)

    return ask(question, history, passage), ask(CONTENT_FREE_QUESTION, (), None)


def fusion_prompt(
    question: str,
    history: Sequence[Exchange],
    candidates: Sequence[str],
    *,
    style: AnswerStyle = "concise",
    passage: str | None = None,
    max_new_tokens: int = 48,
) -> Prompt:
    """Ask the aggregator to write one answer from the top-ranked candidates (best first)."""
    listed = "\n".join(f"- {quoted_candidate(text)}" for text in candidates)
    parts = []
    if history:
        parts.append("Conversation so far:\n" + _transcript(history))
    parts.append(f"Question: {question}")
    parts.append(f"Answers proposed by other assistants, best-rated first:\n{listed}")
    parts.append(f"Write the single best answer, correcting mistakes. {_STYLE[style]}")
    system = _system("You combine several answers into one accurate answer.", passage)
    messages = (system, Message("user", "\n\n".join(parts)))
    return Prompt(messages, max_new_tokens=max_new_tokens, stop=_STOP[style])


PAIRWISE_PREFIX = "Better answer:"


def pairwise_prompt(
    question: str, history: Sequence[Exchange], first: str, second: str, *, passage: str | None = None
) -> Prompt:
    """Ask a judge which of two answers is better; its answer starts with PAIRWISE_PREFIX.

    The judge is scored on continuing with " A" or " B"; nothing is generated.
    """
    parts = []
    if history:
        parts.append("Conversation so far:\n" + _transcript(history))
    parts.append(f"Question: {question}")
    parts.append(f"Answer A: {quoted_candidate(first)}\nAnswer B: {quoted_candidate(second)}")
    parts.append("Which answer is more accurate, relevant, complete and coherent? Reply with A or B.")
    system = _system("You are a careful, impartial judge of answers.", passage)
    return Prompt((system, Message("user", "\n\n".join(parts))), prefill=PAIRWISE_PREFIX, max_new_tokens=1)
