"""Dataset loaders: the shipped samples (and the larger shared files when present), format
detection, JSONL, each official format's quirks, malformed files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.conversation import Conversation, Question
from pipeline.errors import DatasetError
from pipeline.evaluation.catalog import DATASETS, samples_dir
from pipeline.evaluation.datasets import (
    CANNOTANSWER,
    FORMATS,
    answerable,
    dataset_of,
    detect_format,
    load_conversations,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "data"
SAMPLES = samples_dir()  # shipped in the package: every test below runs in a fresh clone


def _shared_convqa() -> Path:
    """shared/data/convqa beside the repo, or under $PEERBLEND_SHARED_DATA.

    The variable may name the shared data folder (holding convqa/) or convqa/ itself.
    """
    base = os.environ.get("PEERBLEND_SHARED_DATA")
    if not base:
        return REPO.parent / "shared" / "data" / "convqa"
    base_path = Path(base)
    return base_path / "convqa" if (base_path / "convqa").is_dir() else base_path


# The larger shared files are an optional, extra source: where they are (and always in CI,
# where a missing folder then fails), the same checks also run on them.
SHARED = _shared_convqa()
WITH_SHARED = SHARED.is_dir() or bool(os.environ.get("CI"))

# file, format, conversations, questions: counted from the files themselves.
SAMPLE_FILES = [
    (SAMPLES / "convquestions-dev-sample.json", "convquestions", 5, 25),
    (SAMPLES / "coqa-dev-sample.json", "coqa", 1, 12),
    (SAMPLES / "quac-val-sample.json", "quac", 5, 41),
    (SAMPLES / "doqa-cooking-dev-v2.1-sample.json", "doqa", 5, 18),
    (SAMPLES / "conversations-sample.jsonl", "jsonl", 2, 13),
]
SHARED_FILES = [
    (SHARED / "convquestions/val_books.json", "convquestions", 448, 2240),
    (SHARED / "convquestions/val_movies.json", "convquestions", 448, 2240),
    (SHARED / "convquestions/val_music.json", "convquestions", 448, 2240),
    (SHARED / "convquestions/val_soccer.json", "convquestions", 448, 2240),
    (SHARED / "convquestions/val_tv_series.json", "convquestions", 448, 2240),
    (SHARED / "coqa/coqa-dev-sample.json", "coqa", 1, 12),
    (SHARED / "quac/quac-val-sample.json", "quac", 5, 41),
    (SHARED / "doqa/doqa-cooking-dev-v2.1.json", "doqa", 200, 911),
]
FILES = SAMPLE_FILES + (SHARED_FILES if WITH_SHARED else [])


def _by_id(conversations: list[Conversation], conv_id: str) -> Conversation:
    return next(c for c in conversations if c.id == conv_id)


def _write(tmp_path: Path, name: str, content: object) -> Path:
    path = tmp_path / name
    text = content if isinstance(content, str) else json.dumps(content)
    path.write_text(text, encoding="utf-8")
    return path


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


# --- the real files: the shipped samples, and the shared ones where present -------


@pytest.mark.parametrize(
    ("path", "kind", "n_conversations", "n_questions"), FILES, ids=[_name(f[0]) for f in FILES]
)
def test_a_real_file_loads_with_expected_counts(
    path: Path, kind: str, n_conversations: int, n_questions: int
) -> None:
    conversations = load_conversations(path)

    assert detect_format(path) == kind
    assert len(conversations) == n_conversations
    assert sum(len(c.questions) for c in conversations) == n_questions
    assert {dataset_of(c.source) for c in conversations} == {kind}
    if kind == "convquestions":  # the source names the domain: the record's, the file's for DoQA
        assert all(c.source == f"convquestions:{c.meta['domain']}" for c in conversations)
    if kind == "doqa":
        assert {c.source for c in conversations} == {"doqa:cooking"}
    assert all(c.meta["file"] == str(path) for c in conversations)
    ids = [c.id for c in conversations]
    assert all(ids) and len(set(ids)) == len(ids)
    for conversation in conversations:
        for question in conversation.questions:
            assert question.text == question.text.strip() and question.text
            assert question.gold, f"{conversation.id}: {question.text!r} has no gold"
            assert all(g == g.strip() and g for g in question.gold)
            assert len(set(question.gold)) == len(question.gold)
        if kind == "convquestions":
            assert conversation.passage is None
            assert len(conversation.questions) == 5
        elif kind != "jsonl":
            assert conversation.passage and conversation.passage.strip()
            assert not conversation.passage.endswith(CANNOTANSWER)


def test_every_dataset_with_a_loader_ships_a_sample_of_its_format() -> None:
    with_loader = {d.format for d in DATASETS.values() if d.format}
    shipped = {d.format for d in DATASETS.values() if d.sample}

    assert with_loader == shipped == {"convquestions", "coqa", "quac", "doqa"}
    assert {kind for _, kind, _, _ in SAMPLE_FILES} == set(FORMATS)
    assert sorted(p.name for p in SAMPLES.iterdir()) == sorted(
        [*(f[0].name for f in SAMPLE_FILES), "README.md"]
    )


CONVQUESTIONS_SETS: list[Any] = [
    pytest.param([SAMPLES / "convquestions-dev-sample.json"], 5, 25, id="sample")
] + (
    [
        pytest.param(
            [
                SHARED / f"convquestions/val_{d}.json"
                for d in ("books", "movies", "music", "soccer", "tv_series")
            ],
            2240,
            11200,
            id="shared",
        )
    ]
    if WITH_SHARED
    else []
)


@pytest.mark.parametrize(("files", "n_conversations", "n_questions"), CONVQUESTIONS_SETS)
def test_convquestions_has_every_domain_and_five_turns_each(
    files: list[Path], n_conversations: int, n_questions: int
) -> None:
    conversations = [c for f in files for c in load_conversations(f)]

    assert len(conversations) == n_conversations
    assert sum(len(c.questions) for c in conversations) == n_questions
    assert {c.meta["domain"] for c in conversations} == {"books", "movies", "music", "soccer", "tv_series"}


def test_convquestions_golds_are_split_on_semicolons_and_stripped() -> None:
    conversations = load_conversations(SAMPLES / "convquestions-dev-sample.json")

    first = _by_id(conversations, "6722")
    assert first.meta["domain"] == "books"
    assert first.questions[0].gold == ("Italy", "India", "Indonesia")
    assert first.questions[1] == Question(
        text="What is the follow up book?",
        gold=("Committed: A Skeptic Makes Peace with Marriage",),
    )
    # "Joel Glazer; Avram Glazer": a space after the separator.
    soccer = _by_id(conversations, "6743")
    assert soccer.meta["domain"] == "soccer"
    assert soccer.questions[1].gold == ("Joel Glazer", "Avram Glazer")


def test_coqa_golds_are_the_answer_then_additional_answers_deduplicated() -> None:
    (story,) = load_conversations(SAMPLES / "coqa-dev-sample.json")

    assert story.id == "3dr23u6we5exclen4th8uq9rb42tel"
    assert story.passage is not None and story.passage.startswith("Once upon a time")
    assert story.meta["source"] == "mctest"
    assert story.questions[0] == Question("What color was Cotton?", ("white",))
    assert story.questions[4].gold == (
        "orange and white",
        "orange with white tiger stripes",
        "orange",
    )
    assert story.questions[2].gold == ("no", "No")  # exact duplicates only


CANNOTANSWER_COUNTS = [
    pytest.param(SAMPLES / "quac-val-sample.json", 10, id="quac-sample"),
    pytest.param(SAMPLES / "doqa-cooking-dev-v2.1-sample.json", 9, id="doqa-sample"),
] + ([pytest.param(SHARED / "doqa/doqa-cooking-dev-v2.1.json", 249, id="doqa-shared")] if WITH_SHARED else [])


@pytest.mark.parametrize(("path", "n_unanswerable"), CANNOTANSWER_COUNTS)
def test_quac_style_cannotanswer_is_kept_as_the_gold(path: Path, n_unanswerable: int) -> None:
    conversations = load_conversations(path)

    golds = [q.gold for c in conversations for q in c.questions]
    assert golds.count((CANNOTANSWER,)) == n_unanswerable
    assert all(CANNOTANSWER not in g or g == (CANNOTANSWER,) for g in golds)
    assert not any(answerable(list(g)) for g in golds if g == (CANNOTANSWER,))  # counted, not scored


def test_quac_gold_starts_with_the_original_answer() -> None:
    conversations = load_conversations(SAMPLES / "quac-val-sample.json")

    first = _by_id(conversations, "C_5ab583f64dbb47b995cf59328ea0af43_1")
    assert first.meta["title"] == "Anna Vissi"
    assert first.questions[0].gold == (
        "In May 1983, she married Nikos Karvelas, a composer,",
        "In May 1983, she married Nikos Karvelas,",
    )
    assert first.passage is not None and first.passage.endswith("at the time.")


def test_doqa_empty_span_falls_back_to_its_free_form_answer() -> None:
    conversations = load_conversations(SAMPLES / "doqa-cooking-dev-v2.1-sample.json")

    # The one DoQA cooking dev answer whose span text is "" (its input_text is set).
    coffee = _by_id(conversations, "C_0f06d0da21e34b768a3e713787466d79")
    assert coffee.questions[0].text == "how do you make your coffee"
    assert coffee.questions[0].gold[0].startswith("Yes. Boil water")


def test_limit_keeps_the_first_conversations() -> None:
    path = SAMPLES / "doqa-cooking-dev-v2.1-sample.json"
    everything = load_conversations(path)

    assert load_conversations(path, limit=3) == everything[:3]
    assert load_conversations(path, limit=0) == []
    assert load_conversations(path, limit=10_000) == everything


def test_an_explicit_format_overrides_detection() -> None:
    conversations = load_conversations(SAMPLES / "quac-val-sample.json", format="doqa")

    assert {c.source for c in conversations} == {"doqa"}


def test_detection_reads_content_not_the_file_name(tmp_path: Path) -> None:
    for path, kind, _, _ in SAMPLE_FILES:
        copy = _write(tmp_path, "data.json", path.read_text(encoding="utf-8"))
        assert detect_format(copy) == kind


# --- JSONL ------------------------------------------------------------------


def test_jsonl_fixture_loads_and_skips_blank_lines() -> None:
    path = FIXTURES / "conversations.jsonl"

    kitten, book = load_conversations(path)

    assert detect_format(path) == "jsonl"
    assert kitten.id == "kitten" and kitten.source == "jsonl"
    assert kitten.passage == "Cotton was a little white kitten who lived in a barn."
    assert kitten.questions[1].gold == ("in a barn", "a barn")
    assert book.id == "7" and book.passage is None
    assert book.questions[1] == Question("And its sequel?", ())  # JSONL may omit golds


def test_one_line_jsonl_is_detected(tmp_path: Path) -> None:
    path = _write(tmp_path, "one.jsonl", {"turns": [{"question": "Why?", "answers": ["So."]}]})

    assert detect_format(path) == "jsonl"
    assert load_conversations(path)[0].questions == (Question("Why?", ("So.",)),)


def test_jsonl_lines_end_only_at_newlines(tmp_path: Path) -> None:
    record = {"turns": [{"question": "Line\u2028separator?", "answers": ["a\x85b"]}]}
    path = _write(tmp_path, "raw.jsonl", json.dumps(record, ensure_ascii=False) + "\r\n")

    (conversation,) = load_conversations(path)

    assert conversation.questions == (Question("Line\u2028separator?", ("a\x85b",)),)


def _dump_jsonl(conversations: list[Conversation], path: Path) -> None:
    lines = [
        json.dumps(
            {
                "id": c.id,
                "passage": c.passage,
                "turns": [{"question": q.text, "answers": list(q.gold)} for q in c.questions],
            },
            ensure_ascii=False,  # raw non-ASCII, U+2028 included, as real files have
        )
        for c in conversations
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# Non-empty, already-stripped text: the loader strips questions.
_text = st.text(st.characters(codec="utf-8"), min_size=1).map(str.strip).filter(bool)
_conversations = st.lists(
    st.builds(
        Conversation,
        questions=st.lists(
            st.builds(Question, text=_text, gold=st.lists(_text, max_size=3).map(tuple)),
            min_size=1,
            max_size=4,
        ).map(tuple),
        id=st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
        passage=st.none() | _text,
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=50, deadline=None)
@given(_conversations)
def test_jsonl_round_trip(conversations: list[Conversation]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dump.jsonl"
        _dump_jsonl(conversations, path)

        loaded = load_conversations(path)

    assert [(c.id, c.passage, c.questions) for c in loaded] == [
        (c.id, c.passage, c.questions) for c in conversations
    ]
    assert {c.source for c in loaded} == {"jsonl"}


# --- malformed files --------------------------------------------------------


def _cq(*questions: object) -> dict[str, object]:
    return {"conv_id": 1, "questions": list(questions)}


GOOD_CQ = {"question": "Who?", "answer_text": "Me"}
GOOD_QA = {"question": "Who?", "answers": [{"text": "Me"}], "orig_answer": {"text": "Me"}}


def _quac(*paragraphs: object) -> dict[str, object]:
    return {"data": [{"title": "T", "section_title": "S", "paragraphs": list(paragraphs)}]}


MALFORMED = [
    # (format, file content, fragment of the message after the file name)
    ("coqa", '{"data": [', "invalid JSON at line 1"),
    ("convquestions", {"data": []}, "expected a list of conversations, got dict"),
    (
        "convquestions",
        [_cq(GOOD_CQ), _cq(GOOD_CQ), _cq(GOOD_CQ, {"answer_text": "x"})],
        "conversation 3, question 2: missing 'question'",
    ),
    ("convquestions", [_cq({"question": "Who?"})], "conversation 1, question 1: missing 'answer_text'"),
    (
        "convquestions",
        [_cq({"question": "Who?", "answer_text": 3})],
        "conversation 1, question 1: 'answer_text' must be str, got int",
    ),
    (
        "convquestions",
        [_cq({"question": ["Who?"], "answer_text": "Me"})],
        "conversation 1, question 1: 'question' must be str, got list",
    ),
    ("convquestions", [_cq(GOOD_CQ), "not an object"], "conversation 2: expected an object, got str"),
    ("convquestions", [_cq()], "conversation 1: no questions"),
    ("coqa", [], "expected an object with a 'data' list"),
    (
        "coqa",
        {"data": [{"story": "S", "questions": [{"input_text": "Q?", "turn_id": 1}]}]},
        "conversation 1, answers: missing, or not a list",
    ),
    (
        "coqa",
        {
            "data": [
                {
                    "story": "S",
                    "questions": [{"input_text": "Q?", "turn_id": 2}],
                    "answers": [{"input_text": "A", "turn_id": 1}],
                }
            ]
        },
        "conversation 1, question 1: no answer with turn_id 2",
    ),
    (
        "coqa",
        {"data": [{"story": 5, "questions": [], "answers": []}]},
        "conversation 1: 'story' must be str, got int",
    ),
    (
        "quac",
        _quac({"context": "C", "qas": [GOOD_QA]}, {"context": "C", "qas": [{"answers": [{"text": "Me"}]}]}),
        "conversation 2, question 1: missing 'question'",
    ),
    (
        "quac",
        _quac({"context": "C", "qas": [{"question": "Who?", "answers": "Me"}]}),
        "conversation 1, question 1: 'answers' must be list, got str",
    ),
    ("quac", _quac({"qas": [GOOD_QA]}), "conversation 1: missing 'context'"),
    ("jsonl", '{"turns": ["Hi?"]}\n{"turns": [\n', ":2: invalid JSON at line 1"),
    (
        "jsonl",
        '{"turns": ["Hi?"]}\n\n{"turns": [{"answers": ["x"]}]}\n',
        ":3, turn 1: 'question' must be a string",
    ),
    (
        "jsonl",
        '{"turns": [{"question": "Hi?", "answers": {"a": 1}}]}\n',
        ":1, turn 1: 'answers' must be a list of strings",
    ),
    ("jsonl", '{"turns": [42]}\n', ":1, turn 1: expected a string or an object"),
    ("jsonl", '["not", "an", "object"]\n{"id": 1}\n', ":2: missing 'turns'"),
    (
        "jsonl",
        '{"turns": [{"question": "Hi?", "answers": [1]}]}\n',
        ":1, turn 1: 'answers' must be a list of strings",
    ),
    ("jsonl", "\n\n", "no conversations"),
]


@pytest.mark.parametrize(("kind", "content", "fragment"), MALFORMED)
def test_malformed_file_names_the_file_and_the_record(
    tmp_path: Path, kind: str, content: object, fragment: str
) -> None:
    path = _write(tmp_path, f"bad-{kind}.json", content)

    with pytest.raises(DatasetError) as raised:
        load_conversations(path, format=kind, limit=1)  # limit never hides a bad record

    message = str(raised.value)
    assert message.startswith(str(path)), message
    assert fragment in message, message


@pytest.mark.parametrize("content", ['{"data": [', "[1, 2]", '{"foo": 1}', "", '"just a string"'])
def test_undetectable_file_raises(tmp_path: Path, content: str) -> None:
    path = _write(tmp_path, "mystery.json", content)

    with pytest.raises(DatasetError, match="mystery.json"):
        load_conversations(path)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nowhere.json: cannot read"):
        load_conversations(tmp_path / "nowhere.json", format="coqa")


def test_unknown_format_name_lists_the_known_ones() -> None:
    with pytest.raises(DatasetError) as raised:
        load_conversations(FIXTURES / "conversations.jsonl", format="squad")

    assert "'squad'" in str(raised.value)
    assert all(name in str(raised.value) for name in FORMATS)


@pytest.mark.parametrize("limit", [-1, 1.5, True, "3"])
def test_bad_limit_raises(limit: object) -> None:
    with pytest.raises(DatasetError, match="limit"):
        load_conversations(FIXTURES / "conversations.jsonl", limit=limit)  # type: ignore[arg-type]


def test_module_stays_pure() -> None:
    code = (
        "import sys, pipeline.evaluation.datasets; "
        "heavy = {'celery', 'torch', 'transformers', 'sqlmodel'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.mark.parametrize(
    ("kind", "content"),
    [
        ("convquestions", [_cq({"question": "Who?", "answer_text": " ; "}, GOOD_CQ)]),
        ("doqa", _quac({"context": "C", "qas": [{"question": "Who?", "answers": [{"text": ""}]}, GOOD_QA]})),
    ],
)
def test_a_question_whose_golds_are_all_empty_is_kept_unscored(
    tmp_path: Path, kind: str, content: object
) -> None:
    # Given: an official-format file where one question's gold answers are all empty strings
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(content))

    (conversation,) = load_conversations(path, format=kind)

    # Then: the file loads; that question is kept with no gold (left out of scoring), the next scores
    assert [q.gold for q in conversation.questions][0] == ()
    assert not answerable(list(conversation.questions[0].gold))
    assert answerable(list(conversation.questions[1].gold))


# --- one test per official-format quirk (besides the samples' above) -----------


def test_coqa_train_layout_without_additional_answers_loads(tmp_path: Path) -> None:
    # Given: a story as in coqa-train-v1.0.json: no additional_answers (only dev has them)
    story = {
        "id": "s1",
        "source": "wikipedia",
        "story": "Dune is a 1965 novel by Frank Herbert.",
        "questions": [{"input_text": "Who wrote Dune?", "turn_id": 1}, {"input_text": "When?", "turn_id": 2}],
        "answers": [{"input_text": "Frank Herbert", "turn_id": 1}, {"input_text": "1965", "turn_id": 2}],
    }
    path = _write(tmp_path, "coqa-train.json", {"version": "1.0", "data": [story]})

    (conversation,) = load_conversations(path)

    assert [q.gold for q in conversation.questions] == [("Frank Herbert",), ("1965",)]


def test_coqa_an_additional_answer_set_without_a_turn_adds_nothing_to_it(tmp_path: Path) -> None:
    story = {
        "story": "S",
        "questions": [{"input_text": "Q1?", "turn_id": 1}, {"input_text": "Q2?", "turn_id": 2}],
        "answers": [{"input_text": "a", "turn_id": 1}, {"input_text": "b", "turn_id": 2}],
        "additional_answers": {"0": [{"input_text": "a2", "turn_id": 1}]},
    }
    path = _write(tmp_path, "coqa.json", {"data": [story]})

    (conversation,) = load_conversations(path)

    assert [q.gold for q in conversation.questions] == [("a", "a2"), ("b",)]


def test_convquestions_official_layout_without_conv_id_loads(tmp_path: Path) -> None:
    # Given: a record as in ConvQuestions_dev.zip's dev_set_ALL.json (no Verbal-ConvQuestions fields)
    record = {
        "domain": "books",
        "seed_entity": "https://www.wikidata.org/wiki/Q190192",
        "seed_entity_text": "Dune",
        "questions": [
            {"turn": 0, "question": "Who wrote Dune?", "answer": "Q312623", "answer_text": "Frank Herbert"},
            {
                "turn": 1,
                "question": "Sequel?",
                "answer": "Q1;Q2",
                "answer_text": "Dune Messiah;Children of Dune",
            },
        ],
    }
    path = _write(tmp_path, "dev_set_ALL.json", [record])

    (conversation,) = load_conversations(path)

    assert conversation.id == "1" and conversation.source == "convquestions:books"
    assert conversation.questions[1].gold == ("Dune Messiah", "Children of Dune")


def test_quac_orig_answer_alone_is_the_gold(tmp_path: Path) -> None:
    qa = {"question": "Who?", "answers": [], "orig_answer": {"text": "Me", "answer_start": 0}}
    path = _write(tmp_path, "quac.json", _quac({"context": "Me. CANNOTANSWER", "qas": [qa]}))

    (conversation,) = load_conversations(path, format="quac")

    assert conversation.questions[0].gold == ("Me",)
    assert conversation.passage == "Me."


def test_the_wheel_ships_every_sample() -> None:
    import fnmatch
    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "pipeline"
    ]
    for path in SAMPLES.iterdir():
        relative = path.relative_to(REPO / "pipeline").as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in globs), f"{relative} is not in the package data"
