"""``check_run``: which method / policy / top_k a committee accepts for a run, and the defaults it fills in."""

from __future__ import annotations

import pytest

from pipeline.errors import InputError
from pipeline.plan import RunConfig, check_run
from tests.test_policy import committee


@pytest.mark.parametrize(
    ("method", "policy", "top_k", "message"),
    [
        ("vote", "full", None, "unknown method 'vote'"),
        ("single", "full", None, "unknown method 'single'"),
        ("peer", "p4", None, "unknown policy 'p4'"),
        ("peer", "full", 0, "top_k must be a positive integer"),
        ("peer", "full", -2, "top_k must be a positive integer"),
        ("peer", "full", 2, "names no aggregator"),
        ("pairwise", "p2", 3, "names no aggregator"),
        ("single:m9", "full", None, "'m9' is not a generator"),
        ("single:", "full", None, "is not a generator"),
        ("single:m1", "p1", None, "policy 'p1' does not apply"),
    ],
)
def test_check_run_refuses(method, policy, top_k, message):
    members = committee(4)

    with pytest.raises(InputError, match=message):
        check_run(members, method=method, policy=policy, top_k=top_k)


def test_check_run_refuses_a_reviewer_only_member_as_single():
    members = committee(5, roles={"m4": ("reviewer",)})

    with pytest.raises(InputError, match="'m4' is not a generator"):
        check_run(members, method="single:m4", policy="full", top_k=None)


def test_check_run_defaults_and_accepts():
    members = committee(4, top_k=2, aggregator="m1")

    assert check_run(members, method="peer", policy="p2", top_k=None) == RunConfig("peer", "p2", 2)
    assert check_run(members, method="single:m3", policy="full", top_k=5) == RunConfig("single:m3", "full", 5)
    assert not RunConfig("single:m3", "full", 5).fuses  # a single member never fuses


def test_pairwise_always_has_a_judge_the_first_reviewer_unless_named():
    # A committee needs a reviewer, so "pairwise without a judge" cannot be configured.
    members = committee(4, roles={"m0": ("generator",), "m1": ("generator",)})
    assert members.judge == "m2"
    assert check_run(members, method="pairwise", policy="full", top_k=None).method == "pairwise"

    named = committee(4, pairwise_judge="m3")
    assert named.judge == "m3"
    with pytest.raises(ValueError, match="at least one reviewer"):
        committee(2, roles={"m0": ("generator",), "m1": ("generator",)})
