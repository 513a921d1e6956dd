"""Conversations from user JSON: accepted shapes and errors that say where the problem is."""

from __future__ import annotations

import pytest

from pipeline.conversation import Conversation, Question, conversation_from_json
from pipeline.errors import InputError

# --- accepted shapes -------------------------------------------------------------------------


def test_bare_list_of_strings() -> None:
    conversation = conversation_from_json(["Who wrote Dune?", "  When was it published? "])

    assert conversation.questions == (
        Question("Who wrote Dune?"),
        Question("When was it published?"),
    )
    assert conversation.id is None
    assert conversation.passage is None


def test_turns_object_with_metadata() -> None:
    conversation = conversation_from_json(
        {"id": 42, "passage": "Dune is a novel.", "source": "demo", "turns": ["Who wrote Dune?"]}
    )

    assert conversation.id == "42"
    assert conversation.passage == "Dune is a novel."
    assert conversation.source == "demo"
    assert [q.text for q in conversation.questions] == ["Who wrote Dune?"]


def test_questions_is_a_synonym_of_turns() -> None:
    assert conversation_from_json({"questions": ["q1", "q2"]}) == conversation_from_json(
        {"turns": ["q1", "q2"]}
    )


@pytest.mark.parametrize(
    ("turn", "gold"),
    [
        ({"question": "Who?", "answers": "Frank Herbert"}, ("Frank Herbert",)),
        ({"question": "Who?", "answers": ["Frank Herbert", "Herbert"]}, ("Frank Herbert", "Herbert")),
        ({"question": "Who?", "gold": ["Herbert"]}, ("Herbert",)),
        ({"question": "Who?", "answers": ["Herbert", "  "]}, ("Herbert",)),
        ({"question": "Who?"}, ()),
    ],
    ids=["answer-string", "answer-list", "gold-key", "blank-gold-dropped", "no-gold"],
)
def test_dict_turns_with_gold_answers(turn: dict[str, object], gold: tuple[str, ...]) -> None:
    conversation = conversation_from_json({"turns": [turn]})

    assert conversation.questions == (Question("Who?", gold),)


def test_mixed_string_and_dict_turns() -> None:
    conversation = conversation_from_json(["q1", {"question": "q2", "answers": "a2"}])

    assert conversation.questions == (Question("q1"), Question("q2", ("a2",)))


def test_non_string_source_is_ignored() -> None:
    assert conversation_from_json({"turns": ["q"], "source": 7}).source is None


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ([], ["upload.json", "'turns' is empty"]),
        ({"turns": []}, ["upload.json", "'turns' is empty"]),
        ({"id": "x"}, ["upload.json", "missing 'turns'"]),
        ({"turns": "q1"}, ["upload.json", "'turns' must be a list", "str"]),
        ("q1", ["upload.json", "expected an object", "str"]),
        (7, ["upload.json", "expected an object", "int"]),
        (None, ["upload.json", "expected an object", "NoneType"]),
        (["q1", "   "], ["upload.json, turn 2", "empty"]),
        (["q1", "q2", {"question": ""}], ["upload.json, turn 3", "empty"]),
        (["q1", 5], ["upload.json, turn 2", "expected a string or an object", "int"]),
        ([{"answers": ["a"]}], ["upload.json, turn 1", "'question' must be a string"]),
        ([{"question": ["q"]}], ["upload.json, turn 1", "'question' must be a string"]),
        ([{"question": "q", "answers": [1]}], ["upload.json, turn 1", "'answers' must be a list of strings"]),
        ([{"question": "q", "answers": {"a": 1}}], ["upload.json, turn 1", "'answers'"]),
        ({"turns": ["q"], "passage": 3}, ["upload.json", "'passage' must be a string"]),
        ({"turns": ["q"], "id": [1]}, ["upload.json", "'id' must be a string or an integer"]),
    ],
    ids=[
        "empty-list",
        "empty-turns",
        "missing-turns",
        "turns-not-list",
        "string",
        "int",
        "null",
        "blank-question",
        "empty-dict-question",
        "turn-wrong-type",
        "dict-without-question",
        "question-not-string",
        "answers-not-strings",
        "answers-dict",
        "passage-not-string",
        "id-wrong-type",
    ],
)
def test_malformed_input_raises_input_error_saying_where(data: object, fragments: list[str]) -> None:
    with pytest.raises(InputError) as raised:
        conversation_from_json(data, where="upload.json")

    for fragment in fragments:
        assert fragment in str(raised.value)


def test_default_where_is_conversation() -> None:
    with pytest.raises(InputError, match=r"^conversation, turn 1: "):
        conversation_from_json([""])


def test_conversation_itself_refuses_no_questions_and_empty_questions() -> None:
    with pytest.raises(InputError, match="no questions"):
        Conversation(questions=())
    with pytest.raises(InputError, match="question 2 .*'c1'.* is empty"):
        Conversation(questions=(Question("q"), Question("  ")), id="c1")
