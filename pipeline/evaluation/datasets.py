"""Dataset files → ``Conversation`` objects with gold answers, all-or-nothing.

Formats (``FORMATS``): ConvQuestions (``val_*.json``), CoQA, QuAC and DoQA in
their official layouts, and our own JSONL (one ``conversation_from_json``
object a line). Every loaded conversation has ``source`` set to the format
name and ``meta["file"]`` to the file it came from. Where the data names a domain,
the source names it too, ``format:domain`` (``dataset_domain``): a ConvQuestions
record's ``domain`` (``convquestions:books``), a DoQA file's topic from its official
name (``doqa:cooking`` from ``doqa-cooking-dev-v2.1.json``). Reports group by source,
and the learned decision's cross-validation leaves one domain out at a time.

Gold answers are the dataset's literal strings, stripped, empty ones dropped,
exact duplicates removed (first occurrence kept, so ``gold[0]`` is the
dataset's primary answer). A question left with no gold is kept without one: it is
replayed, and left out of scoring and calibration (``answerable``), never a reason
to refuse the file. QuAC/DoQA's ``"CANNOTANSWER"`` stays a gold string
(``CANNOTANSWER``): it is the dataset's own verdict that the passage holds no
answer, and rewriting it ("I don't know") would invent a reference.

Errors name the file and a 1-based record position, e.g.
``val_books.json: conversation 3, question 2: missing 'question'``; a file
with any bad record raises ``DatasetError`` and nothing is returned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pipeline.conversation import Conversation, Question, conversation_from_json
from pipeline.errors import DatasetError, InputError
from pipeline.evaluation.metrics import CANNOTANSWER, is_no_answer

DatasetFormat = Literal["convquestions", "coqa", "quac", "doqa", "jsonl"]
FORMATS: tuple[DatasetFormat, ...] = ("convquestions", "coqa", "quac", "doqa", "jsonl")
__all__ = [
    "CANNOTANSWER",
    "FORMATS",
    "DatasetFormat",
    "answerable",
    "dataset_domain",
    "dataset_of",
    "detect_format",
    "load_conversations",
]


def load_conversations(
    path: str | Path, *, format: str | None = None, limit: int | None = None
) -> list[Conversation]:
    """Load every conversation of ``path``, then keep the first ``limit`` (all if None).

    ``format`` is one of ``FORMATS``; None detects it from the content. The
    whole file is validated even with a ``limit``, so a bad file always fails.
    """
    path = Path(path)
    if limit is not None and (type(limit) is not int or limit < 0):
        raise DatasetError(f"limit must be a non-negative int or None, got {limit!r}")
    text = _read_text(path)
    kind = _check_format(format) if format is not None else _sniff(path, text)
    conversations = list(_LOADERS[kind](path, text))  # all parsed: all-or-nothing
    if not conversations:
        raise DatasetError(f"{path}: no conversations in this {kind} file")
    return conversations if limit is None else conversations[:limit]


def detect_format(path: str | Path) -> DatasetFormat:
    """Name the format of ``path`` from its content (the layout of its JSON)."""
    path = Path(path)
    return _sniff(path, _read_text(path))


def _sniff(path: Path, text: str) -> DatasetFormat:
    """The format whose layout ``text`` has: the keys of its first record."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        if "turns" in _first_line(text) or "questions" in _first_line(text):
            return "jsonl"  # several JSON objects, one a line
        raise _json_error(path, error) from None
    if "answer_text" in _first(_first(data).get("questions")):
        return "convquestions"
    if isinstance(data, dict):
        record = _first(data.get("data"))
        if "story" in record:
            return "coqa"
        if "paragraphs" in record:  # QuAC: Wikipedia sections; DoQA: StackExchange
            return "quac" if "section_title" in record else "doqa"
        if "turns" in data or "questions" in data:
            return "jsonl"  # a one-line JSONL file
    known = ", ".join(FORMATS)
    raise DatasetError(f"{path}: unknown dataset layout; pass format= one of {known}")


def _first(items: object) -> dict[str, Any]:
    """``items[0]`` when ``items`` is a list that starts with an object, else ``{}``."""
    if isinstance(items, list) and items and isinstance(items[0], dict):
        return items[0]
    return {}


def _first_line(text: str) -> dict[str, Any]:
    """The first non-blank line parsed as a JSON object, else ``{}``."""
    line = next((line for line in text.split("\n") if line.strip()), "")
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _check_format(name: str) -> DatasetFormat:
    for known in FORMATS:
        if name == known:
            return known
    names = ", ".join(FORMATS)
    raise DatasetError(f"unknown dataset format {name!r}; known formats: {names}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read: {error}") from error


def _parse_json(where: str | Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _json_error(where, error) from None


def _json_error(where: str | Path, error: json.JSONDecodeError) -> DatasetError:
    place = f"line {error.lineno}, column {error.colno}"
    return DatasetError(f"{where}: invalid JSON at {place}: {error.msg}")


def _field(record: object, key: str, kind: type, where: str) -> Any:
    """``record[key]``, checked to be a ``kind``; a DatasetError naming ``where`` if not."""
    if not isinstance(record, dict):
        got = type(record).__name__
        raise DatasetError(f"{where}: expected an object, got {got}")
    if key not in record:
        raise DatasetError(f"{where}: missing {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        got = type(value).__name__
        raise DatasetError(f"{where}: {key!r} must be {kind.__name__}, got {got}")
    return value


def _question(record: object, golds: Iterable[str], where: str, key: str) -> Question:
    """A Question from ``record[key]``; needs at least one non-empty gold."""
    text = _field(record, key, str, where).strip()
    if not text:
        raise DatasetError(f"{where}: the question is empty")
    # An ordered set; none left (an official file has questions whose golds are all empty, e.g.
    # DoQA movies v2.1): the question is kept, unscored, and reports count it as such.
    kept = tuple(dict.fromkeys(g.strip() for g in golds if g.strip()))
    return Question(text=text, gold=kept)


def _conversation(questions: list[Question], where: str, **fields: Any) -> Conversation:
    if not questions:
        raise DatasetError(f"{where}: no questions")
    return Conversation(questions=tuple(questions), **fields)


def _meta(path: Path, record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The file, plus ``record``'s descriptive fields ``keys`` verbatim."""
    return {"file": str(path), **{k: record[k] for k in keys if k in record}}


def _convquestions(path: Path, text: str) -> Iterator[Conversation]:
    """ConvQuestions: a list of conversations; golds: ``answer_text`` split on ``;``."""
    data = _parse_json(path, text)
    if not isinstance(data, list):
        got = type(data).__name__
        raise DatasetError(f"{path}: expected a list of conversations, got {got}")
    for c, record in enumerate(data, 1):
        where = f"{path}: conversation {c}"
        turns = _field(record, "questions", list, where)
        questions = [_cq_question(t, f"{where}, question {q}") for q, t in enumerate(turns, 1)]
        meta = _meta(path, record, ("domain", "seed_entity_text"))
        conv_id = _id(record.get("conv_id"), str(c))
        source = dataset_domain("convquestions", record.get("domain"))
        yield _conversation(questions, where, id=conv_id, source=source, meta=meta)


def _cq_question(turn: object, where: str) -> Question:
    golds = _field(turn, "answer_text", str, where).split(";")
    return _question(turn, golds, where, key="question")


def _coqa(path: Path, text: str) -> Iterator[Conversation]:
    """CoQA: a conversation per story; golds: ``answers``, ``additional_answers``."""
    for c, story in enumerate(_records(path, text), 1):
        where = f"{path}: conversation {c}"
        passage = _field(story, "story", str, where)
        extra = story.get("additional_answers") or {}
        if not isinstance(extra, dict):
            raise DatasetError(f"{where}: 'additional_answers' must be an object")
        answer_sets = [_by_turn(story.get("answers"), f"{where}, answers")]
        answer_sets += [_by_turn(v, f"{where}, additional_answers {k}") for k, v in extra.items()]
        questions = []
        for q, turn in enumerate(_field(story, "questions", list, where), 1):
            at = f"{where}, question {q}"
            turn_id = _field(turn, "turn_id", int, at)
            if turn_id not in answer_sets[0]:
                raise DatasetError(f"{at}: no answer with turn_id {turn_id}")
            golds = [answers[turn_id] for answers in answer_sets if turn_id in answers]
            questions.append(_question(turn, golds, at, key="input_text"))
        meta = _meta(path, story, ("source", "filename"))
        conv_id = _id(story.get("id"), str(c))
        yield _conversation(questions, where, id=conv_id, passage=passage, source="coqa", meta=meta)


def _by_turn(answers: object, where: str) -> dict[int, str]:
    """CoQA answers keyed by ``turn_id``: their free-form ``input_text``."""
    if not isinstance(answers, list):
        raise DatasetError(f"{where}: missing, or not a list")
    texts = {}
    for i, answer in enumerate(answers, 1):
        turn_id = _field(answer, "turn_id", int, f"{where} {i}")
        texts[turn_id] = _field(answer, "input_text", str, f"{where} {i}")
    return texts


def _quac(path: Path, text: str, source: str = "quac") -> Iterator[Conversation]:
    """QuAC/DoQA: a conversation per paragraph; golds: ``orig_answer``, ``answers``."""
    if source == "doqa":  # the official files are named doqa-<topic>-<split>-v<version>.json
        topic = re.match(r"doqa-([a-z]+)-", path.name.lower())
        source = dataset_domain(source, topic.group(1) if topic else None)
    c = 0  # conversations so far, across articles
    for a, article in enumerate(_records(path, text), 1):
        paragraphs = _field(article, "paragraphs", list, f"{path}: article {a}")
        for p, paragraph in enumerate(paragraphs, 1):
            c += 1
            where = f"{path}: conversation {c}"
            context = _field(paragraph, "context", str, where)
            if context.endswith(CANNOTANSWER):  # a sentinel no-answer spans point at
                context = context[: -len(CANNOTANSWER)].rstrip()
            qas = _field(paragraph, "qas", list, where)
            questions = [_quac_question(qa, f"{where}, question {q}") for q, qa in enumerate(qas, 1)]
            meta = _meta(path, article, ("title", "section_title", "background"))
            title = article.get("title") or f"article {a}"
            conv_id = _id(paragraph.get("id"), f"{title}#{p}")
            yield _conversation(questions, where, id=conv_id, passage=context, source=source, meta=meta)


def _quac_question(qa: object, where: str) -> Question:
    """Golds: ``orig_answer`` (the reply given in the dialog) first, then ``answers``."""
    spans = list(_field(qa, "answers", list, where))
    if isinstance(qa, dict) and "orig_answer" in qa:
        spans.insert(0, _field(qa, "orig_answer", dict, where))
    golds = [_field(span, "text", str, f"{where}, answer") for span in spans]
    if not any(g.strip() for g in golds):
        # DoQA has a span with empty text whose free-form ``input_text`` is set.
        golds = [s["input_text"] for s in spans if isinstance(s.get("input_text"), str)]
    return _question(qa, golds, where, key="question")


def _jsonl(path: Path, text: str) -> Iterator[Conversation]:
    """Our JSONL: a ``conversation_from_json`` object a line; blank lines skipped.

    As there, a turn may carry no gold answers (a demo conversation).
    """
    # Only "\n" ends a line: splitlines() would also split inside strings on U+2028.
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            conversation = conversation_from_json(_parse_json(where, line), where=where)
        except InputError as error:
            raise DatasetError(str(error)) from error
        source = conversation.source or "jsonl"  # a record may name its own dataset
        meta = {**conversation.meta, "file": str(path)}
        yield replace(conversation, source=source, meta=meta)


def _records(path: Path, text: str) -> list[Any]:
    """The ``data`` list of an official CoQA/QuAC/DoQA file."""
    data = _parse_json(path, text)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DatasetError(f"{path}: expected an object with a 'data' list")
    return list(data["data"])


def dataset_domain(dataset: str, domain: object) -> str:
    """The source of a conversation: ``dataset:domain`` when the data names a domain, else ``dataset``."""
    if isinstance(domain, str) and re.fullmatch(r"[A-Za-z0-9_ -]{1,40}", domain):
        return f"{dataset}:{domain.strip().lower().replace(' ', '_')}"
    return dataset


def dataset_of(source: str | None) -> str | None:
    """The dataset part of a source (``convquestions`` of ``convquestions:books``)."""
    return source.split(":", 1)[0] if source else source


def _id(value: object, fallback: str) -> str:
    """The record's own id as a string, or ``fallback`` when it has none."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        return fallback
    return str(value)


_LOADERS: dict[DatasetFormat, Callable[[Path, str], Iterator[Conversation]]] = {
    "convquestions": _convquestions,
    "coqa": _coqa,
    "quac": _quac,
    "doqa": partial(_quac, source="doqa"),
    "jsonl": _jsonl,
}


def answerable(gold: list[str] | tuple[str, ...]) -> bool:
    """Whether gold answers can score an answer: some gold, and not a no-answer question by
    QuAC's rule (``pipeline.evaluation.metrics.quac_references``)."""
    return bool(gold) and not is_no_answer(gold)
