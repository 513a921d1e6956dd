"""Recovery: resend the turns that stopped making progress (a worker died, Redis restarted).

Safe to run at any time, from anywhere, as often as wanted: a stalled turn is sent
again as a new attempt claimed in the database (one sender wins), turns are
stored once, and the next turn is sent once. It does not depend on Redis's
visibility timeout.
"""

from __future__ import annotations

import time

from pipeline.outcomes import TurnOutcome
from pipeline.service.client import BlendClient


def recover(client: BlendClient, *, older_than_s: float) -> list[tuple[str, int, int]]:
    """Resend each conversation's first unfinished turn sent more than ``older_than_s`` ago.

    Returns (conversation id, turn index, new attempt) for each turn resent.
    """
    resent = []
    for conversation_id, turn_index in client.store.stalled(older_than_s):
        client.resume(conversation_id)
        state = client.store.progress(conversation_id, turn_index)
        if isinstance(state, int):
            resent.append((conversation_id, turn_index, state))
    return resent


def resume_unfinished(client: BlendClient) -> list[tuple[str, int, int]]:
    """Embedded mode, at start: send again every turn that a previous run of this process left
    unfinished. Its broker lived in that process's memory and died with it, so nothing else will
    ever finish them (another process sharing this store would see its turns sent twice: stored
    once, but computed twice)."""
    return recover(client, older_than_s=0)


def finish(client: BlendClient, resent: list[tuple[str, int, int]], *, timeout_s: float) -> list[TurnOutcome]:
    """Wait for every resent conversation to run to its end (each later turn follows its turn);
    the outcomes in order. Embedded ``peerblend recover`` does this before exiting, since its
    in-memory broker, and every turn it holds, ends with it."""
    outcomes: list[TurnOutcome] = []
    deadline = time.monotonic() + timeout_s
    for conversation_id, _, _ in resent:
        handle = client.handle(conversation_id)
        outcomes.extend(handle.turns(timeout=max(deadline - time.monotonic(), 0.0)))
    return outcomes
