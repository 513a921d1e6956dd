"""Which turn a chat request asks, and waiting for it: a request asks at most once.

``Ask`` finds the turn a request already asked (its Idempotency-Key; the same settings,
history and question: a retry after a timeout, a crash or a lost reply) or asks its question
once, as the next turn of the conversation it continues (named, or found by its exchanges
so far) or of a new one. ``wait_turn`` waits for that turn; both turn the client's errors into
the chat endpoint's (``ChatError``), naming the turn where there is one.
"""

from __future__ import annotations

from pipeline.context import Exchange
from pipeline.errors import BlendError, InputError, ServiceUnavailable, TurnInProgress, TurnTimeout
from pipeline.plan import RunConfig
from pipeline.service.client import BlendClient, TurnOutcome
from pipeline.service.live import LiveConversation, asked_before, find_by_messages
from workers.chat import ChatError


def send_turn(ask: Ask) -> tuple[LiveConversation, int]:
    """The turn this request asks: (its conversation, its index). Blocking: run on a thread.

    A request asks at most once: one that repeats a turn already asked (same Idempotency-Key,
    or the same settings, history and question: a retry) gets that turn, running or stored.
    Otherwise the question is sent as the next turn of the conversation the request continues:
    the one named explicitly; else a stored live conversation whose exchanges so far equal the
    request's earlier messages (if it is busy with another request's turn, a new one with that
    history); else a new one. The conversation is read once before its turn is stored
    (``BlendClient.live`` hands its state on; a new one is not read at all).
    """
    try:
        return ask.send()
    except BlendError as error:
        raise as_chat_error(error) from None
    except ChatError:
        raise
    except Exception as error:  # a broker or database driver error: the service is unavailable
        raise ChatError(
            503, f"the blending service is unavailable: {type(error).__name__}", "server_error"
        ) from None


class Ask:
    """One chat request's question: find the turn it already asked, or ask it once."""

    def __init__(
        self,
        client: BlendClient,
        run: RunConfig,
        system: str | None,
        exchanges: list[Exchange],
        question: str,
        explicit: str | None,
        request_key: str | None,
        bounds: tuple[int | None, tuple[str, ...]],
    ) -> None:
        self.client, self.run, self.system, self.exchanges = client, run, system, exchanges
        self.question, self.explicit, self.request_key = question, explicit, request_key
        self.max_new_tokens, self.stop = bounds  # the request's max_tokens and stop

    def _send_to(self, chat: LiveConversation) -> tuple[LiveConversation, int]:
        index = chat.send(
            self.question, request_key=self.request_key, max_new_tokens=self.max_new_tokens, stop=self.stop
        )
        return chat, index

    def send(self) -> tuple[LiveConversation, int]:
        client = self.client
        earlier = self.by_key() or (self.asked_in(self.explicit) if self.explicit else None)
        if earlier is not None:
            return earlier
        continued = self.explicit or (
            find_by_messages(client, self.run, self.system, self.exchanges) if self.exchanges else None
        )
        if continued is None and self.exchanges:
            earlier = self.asked_in(None)  # its conversation has moved on: the turn is stored
            if earlier is not None:
                return earlier
        if continued is not None:
            chat = client.live(continued)
            try:
                return self._send_to(chat)
            except TurnInProgress:
                earlier = self.running_in(continued) or self.by_key()  # a retry, while it runs
                if earlier is not None:
                    return earlier
                if self.explicit:
                    raise
                # another request is continuing it right now: branch off
        history = [(e.question, e.answer) for e in self.exchanges]
        run = self.run
        chat = client.start(
            history=history, system=self.system, method=run.method, policy=run.policy, top_k=run.top_k
        )
        try:
            return self._send_to(chat)
        except TurnInProgress:
            earlier = self.by_key()  # only a request key that a racing twin holds gets here
            if earlier is None:
                raise
            client.store.discard_unasked(chat.conversation_id)  # the twin's conversation has the turn
            return earlier

    def by_key(self) -> tuple[LiveConversation, int] | None:
        """The turn a request with this Idempotency-Key asked, if any (422 if another question)."""
        if not self.request_key:
            return None
        found = self.client.store.find_by_key(self.request_key)
        if found is None:
            return None
        conversation_id, turn_index, asked = found
        if asked != self.question:
            raise ChatError(
                422,
                f"Idempotency-Key {self.request_key!r} was used for another question "
                f"(turn {turn_index} of conversation {conversation_id})",
                "invalid_request_error",
                code="idempotency_key_reused",
                param="Idempotency-Key",
            )
        return LiveConversation(self.client, conversation_id), turn_index

    def asked_in(self, conversation_id: str | None) -> tuple[LiveConversation, int] | None:
        """The turn asked with exactly this request's settings, history and question (in
        ``conversation_id`` if given), running or stored. A first question is never matched:
        two people may well open with the same words."""
        if not self.exchanges:
            return None
        found = asked_before(
            self.client, self.run, self.system, self.exchanges, self.question, conversation_id=conversation_id
        )
        return None if found is None else (LiveConversation(self.client, found[0]), found[1])

    def running_in(self, conversation_id: str) -> tuple[LiveConversation, int] | None:
        """The conversation's running last turn, if it asks this request's question."""
        running = self.client.store.running_turn(conversation_id)
        if running is None or running[1] != self.question:
            return None
        return LiveConversation(self.client, conversation_id), running[0]


def wait_turn(chat: LiveConversation, turn_index: int, timeout_s: float) -> TurnOutcome:
    """The turn's outcome (blocking: run on a thread). Errors name the turn, so a client can
    fetch it later (``GET /v1/conversations/{id}/turns/{n}``) or retry (which attaches to it)."""
    try:
        # A broker that lost the turn is answered at once (503 naming the turn, which was sent
        # again): the caller's retry attaches to it.
        return chat.wait(turn_index, timeout=timeout_s, fail_on_broker_loss=True)
    except BlendError as error:
        raise as_chat_error(error).about(chat.conversation_id, turn_index) from None
    except Exception as error:  # a broker or database driver error: the service is unavailable
        raise ChatError(
            503, f"the blending service is unavailable: {type(error).__name__}", "server_error"
        ).about(chat.conversation_id, turn_index) from None


def as_chat_error(error: BlendError) -> ChatError:
    if isinstance(error, TurnInProgress):
        return ChatError(409, str(error), "invalid_request_error", code="turn_in_progress")
    if isinstance(error, InputError):
        return ChatError(400, str(error), "invalid_request_error")
    if isinstance(error, ServiceUnavailable):
        return ChatError(503, str(error), "server_error", code="service_unavailable")
    if isinstance(error, TurnTimeout):
        return ChatError(504, str(error), "server_error", code="turn_timeout")
    return ChatError(500, str(error), "server_error")
