"""``check_run``: which method / policy / top_k a committee accepts for a run, and the defaults it fills in."""

from __future__ import annotations

import pytest

from pipeline.errors import InputError
from pipeline.plan import RunConfig, check_run, check_run_name
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
        ("peer", "full", 5, "more than the committee's 4 generators"),
        ("peer", "full", True, "top_k: Input should be a valid integer"),
        ("peer", "full", "2", "top_k: Input should be a valid integer"),
        (None, "full", None, "method: Input should be a valid string"),
        ("peer", ["p1"], None, "policy: Input should be a valid string"),
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
    assert check_run(members, method="single:m3", policy="full", top_k=4) == RunConfig("single:m3", "full", 4)
    assert not RunConfig("single:m3", "full", 4).fuses  # a single member never fuses


def test_pairwise_always_has_a_judge_the_first_reviewer_unless_named():
    # A committee needs a reviewer, so "pairwise without a judge" cannot be configured.
    members = committee(4, roles={"m0": ("generator",), "m1": ("generator",)})
    assert members.judge == "m2"
    assert check_run(members, method="pairwise", policy="full", top_k=None).method == "pairwise"

    named = committee(4, pairwise_judge="m3")
    assert named.judge == "m3"
    with pytest.raises(ValueError, match="at least one reviewer"):
        committee(2, roles={"m0": ("generator",), "m1": ("generator",)})


@pytest.mark.parametrize("run", [None, "peer-full", "ConvQuestions books, p2"])
def test_run_names_that_are_short_printable_strings_pass(run):
    assert check_run_name(run) == run


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (["a"], "must be a string"),
        (1.5, "must be a string"),
        ({"a": 1}, "must be a string"),
        ("", "1 to 100 printable"),
        ("x" * 101, "101 characters"),
        ("bad\nname", "printable"),
        (" padded ", "surrounding spaces"),
        ("nul\x00", "printable"),
    ],
)
def test_run_names_are_refused_when_not_short_printable_strings(run, message):
    with pytest.raises(InputError, match=message):
        check_run_name(run)
