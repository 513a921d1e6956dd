"""Where each thing lives in the policy store (``pipeline.policy.PolicyStore``): one key a thing.

Every key of the store is named here, so a reader (shortlist.py, weights.py, learned.py,
the calibrate and rerank commands) and the writer of a value cannot spell it two ways,
and one file shows everything a committee keeps there.
"""

from __future__ import annotations

from pipeline.policy import p3_cycle

# --- shortlist policies: one state per conversation, p3's counter and cycles ---------------


def conversation_key(committee: str, policy: str, conversation_id: str) -> str:
    """A conversation's ``PolicyState``."""
    return f"{committee}:{policy}:conversation:{conversation_id}"


def counter_key(committee: str, policy: str) -> str:
    """How many conversations the committee started under ``policy`` (p3 numbers them)."""
    return f"{committee}:{policy}:conversations"


def cycle_key(committee: str, policy: str, ordinal: int) -> str:
    """p3: the rank scores of the cycle that conversation number ``ordinal`` belongs to."""
    return f"{committee}:{policy}:cycle:{p3_cycle(ordinal)}"


# --- reviewer weights, the member prior and the learned decision ---------------------------


def trust_key(committee: str) -> str:
    """Online trust statistics of a committee's reviewers."""
    return f"{committee}:trust"


def calibration_key(committee: str) -> str:
    """Calibrated reviewer weights of a committee, written by `peerblend calibrate`."""
    return f"{committee}:calibrated"


def feature_weights_key(committee: str) -> str:
    """Reviewer weights fitted per question feature (``prior_bucket``), written by `peerblend calibrate`."""
    return f"{committee}:calibrated-by-passage"


def prior_key(committee: str) -> str:
    """The member prior of a committee, written by `peerblend calibrate`."""
    return f"{committee}:member-prior"


def learned_key(committee: str) -> str:
    """Where `peerblend calibrate` stores a committee's learned decision (the policy store)."""
    return f"{committee}:learned"
