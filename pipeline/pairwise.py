"""The pairwise method, LLM-Blender's baseline: a judge compares every ordered pair of candidates,
and "max logits" ranks them.

For N candidates every ordered pair (i, j) is judged: M[i][j] is the judge's
confidence that y_i beats y_j when y_i is shown first (M[i][i] = 0). Judging both
orders cancels the judge's position bias. The global score of candidate i is
s_i = sum over j != i of (M[i][j] - M[j][i]); higher is better.

Its review stage is one judge task per ordered pair of generators, on the committee's judge's
queue (``Committee.judge``); a turn stores the N(N-1) judgements as one review row of the judge
(raw: the matrix), not a ballot. Its scores are signed, so the policy shifts them (``turn_scores``).
The report compares the blend with it (a committee baseline), labelled "pairwise K=1".
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from itertools import permutations
from typing import Any, cast

from pipeline.aggregate import Standings, excluded, usable
from pipeline.backend import Backend, Capability, PairJudge, ScoreRequest
from pipeline.committee import Committee, Member
from pipeline.errors import InputError
from pipeline.method import Method, ReviewGroups, Rules, StageRecords, StageTask
from pipeline.policy import TurnRoles
from pipeline.prompts import pairwise_prompt
from pipeline.records import CandidateRecord, Judgement, ReviewRecord, TurnContext
from pipeline.stages import describe_error, fitted

JUDGE = "workers.judge"


def preference(logprob_a: float, logprob_b: float) -> float:
    """P(first) from the judge's log-probabilities of answering "A" and "B"."""
    top = max(logprob_a, logprob_b)
    a, b = math.exp(logprob_a - top), math.exp(logprob_b - top)
    return a / (a + b)


def max_logits(judgements: Sequence[Judgement], members: Sequence[str]) -> dict[str, float]:
    """s_i = sum_j (M[i][j] - M[j][i]) over the judged pairs; one score per member."""
    scores = dict.fromkeys(members, 0.0)
    for j in judgements:
        if j.p_first is None or j.first not in scores or j.second not in scores:
            continue
        scores[j.first] += j.p_first
        scores[j.second] -= j.p_first
    return scores


def pairwise_ranking(scores: dict[str, float], order: Sequence[str]) -> list[str]:
    """Members best first by score; ties keep ``order`` (the committee's)."""
    position = {m: i for i, m in enumerate(order)}
    return sorted(scores, key=lambda m: (-scores[m], position.get(m, len(position))))


def decide_pairwise(
    candidates: Sequence[CandidateRecord], judgements: Sequence[Judgement], *, committee_order: Sequence[str]
) -> Standings:
    """Rank the usable candidates by "max logits" over the judged pairs."""
    order = {name: i for i, name in enumerate(committee_order)}
    pool = sorted((c.member for c in usable(candidates)), key=lambda m: order.get(m, len(order)))
    dropped = excluded(candidates)
    if len(pool) < 2:
        status = "single" if pool else "no_candidates"
        return Standings(tuple(pool), dict.fromkeys(pool, 0.0), status, 0, dropped)
    judged = [j for j in judgements if j.p_first is not None]
    scores = max_logits(judged, pool)
    ranking = pairwise_ranking(scores, pool)
    return Standings(tuple(ranking), scores, "ok" if judged else "no_ballots", len(judged), dropped)


def judge(
    backend: Backend,
    judge_member: Member,
    committee: Committee,
    context: TurnContext,
    candidates: Sequence[CandidateRecord],
    pair: tuple[str, str],
) -> Judgement:
    """The judge's confidence that ``pair[0]``'s answer beats ``pair[1]``'s (shown first); never raises.

    An LLM judge is scored on answering " A" or " B" to a comparison prompt; a
    backend declared with ``Capability.COMPARE`` (a cross-encoder) is asked directly.
    """
    first, second = pair
    text_of = {c.member: c.text for c in usable(candidates)}
    base = Judgement(judge_member.name, first, second, candidates=tuple(candidates), finished_at=time.time())
    if first not in text_of or second not in text_of:
        return replace(base, error="a candidate of this pair failed")
    history, passage = fitted(committee, context)
    start = time.perf_counter()
    try:
        if Capability.COMPARE in judge_member.capabilities:
            conversation = "\n".join([*(f"{e.question}\n{e.answer}" for e in history), context.question])
            judged = cast(PairJudge, backend).compare(conversation, text_of[first], text_of[second])
            p_first = float(judged)
            return replace(
                base, p_first=p_first, seconds=time.perf_counter() - start, finished_at=time.time()
            )
        prompt = pairwise_prompt(context.question, history, text_of[first], text_of[second], passage=passage)
        logprob_a, logprob_b = backend.score([ScoreRequest(prompt, " A"), ScoreRequest(prompt, " B")])
    except Exception as error:  # noqa: BLE001 - an unjudged pair counts for nothing, recorded
        return replace(
            base, error=describe_error(error), seconds=time.perf_counter() - start, finished_at=time.time()
        )
    return replace(
        base,
        p_first=preference(logprob_a, logprob_b),
        seconds=time.perf_counter() - start,
        finished_at=time.time(),
    )


class Pairwise(Method):
    name = "pairwise"
    queue_kwarg = "judge"
    signed_scores = True  # max logits lie in [-(n-1), n-1]
    report_role = "baseline"
    described = "pairwise ranking"

    def check(self, committee: Committee, method: str, policy: str) -> None:
        if committee.judge is None:
            raise InputError(f"method 'pairwise' needs a judge; committee {committee.name!r} has no reviewer")

    def who_works(self, committee: Committee, roles: TurnRoles) -> TurnRoles:
        """The policy's generators, judged by the committee's judge instead of peer review."""
        if not roles.reviewers:
            return roles
        return TurnRoles(roles.generators, (committee.judge or "",), roles.reason, roles.excluded)

    def review_tasks(self, generators: Sequence[str], reviews: ReviewGroups) -> list[StageTask]:
        (judge_name,) = [r for group in reviews for r in group]  # who_works names one judge
        return [
            StageTask(JUDGE, {"judge": judge_name, "pair": [a, b]}, f"judge[{judge_name}: {a} vs {b}]")
            for a, b in permutations(generators, 2)
        ]

    def read(self, items: Sequence[dict[str, Any]]) -> StageRecords:
        judgements = [Judgement.from_json(item) for item in items]
        return (list(judgements[0].candidates) if judgements else []), [], judgements

    def rank(
        self,
        candidates: Sequence[CandidateRecord],
        reviews: Sequence[ReviewRecord],
        judgements: Sequence[Judgement],
        rules: Rules,
    ) -> tuple[Standings, dict[str, Any]]:
        return decide_pairwise(candidates, judgements, committee_order=rules.order), {}

    def decided_by(self, ranked: Standings, rules: Rules) -> str:
        return f"pairwise judgements, max logits ({ranked.ballots_used} judged pairs)"

    def stored_reviews(
        self, reviews: Sequence[ReviewRecord], judgements: Sequence[Judgement]
    ) -> list[dict[str, Any]]:
        """All of a turn's judgements as one review row of the judge (raw: the matrix)."""
        if not judgements:
            return []
        matrix = [
            {"first": j.first, "second": j.second, "p_first": j.p_first, "error": j.error} for j in judgements
        ]
        judged = [j for j in judgements if j.p_first is not None]
        return [
            {
                "reviewer": judgements[0].judge,
                "method": self.name,
                "status": "scored" if judged else "error",
                "raw": json.dumps(matrix),
                "seconds": sum(j.seconds for j in judgements),
                "error": None if judged else "no pair could be judged",
            }
        ]


PAIRWISE = Pairwise()
