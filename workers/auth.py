"""The one API-key check of ``peerblend serve``: who may call the API and read the pages.

With keys configured, a request must hold one of them. The API reads it from
``Authorization: Bearer`` only (how an OpenAI client sends it); the pages also from
``?key=`` (given once, then kept in a SameSite=Strict cookie, ``KEY_COOKIE``) and from that
cookie. Without keys, everyone may.

The check is a FastAPI dependency (``KeyCheck.require``); routes differ only in how a
request without a key is answered (the API's OpenAI-shaped 401, the pages' key form, or
JSON for their scripts). The dependency raises ``Refused`` carrying that answer, and the
app's exception handler returns it, so no route repeats the check in its body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import Response

KEY_COOKIE = "peerblend_key"
Answer = Callable[[Request], Response]  # what a request without a key gets


class Refused(Exception):
    """A request turned away before its route ran; ``response`` is what it gets."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class KeyCheck:
    """The server's accepted keys, and the check every guarded route goes through."""

    def __init__(self, keys: frozenset[str]) -> None:
        self.keys = keys

    def given(self, request: Request, *, bearer_only: bool = False) -> list[str]:
        """The keys ``request`` offers: the bearer token, then (for pages) ``?key=`` and the cookie."""
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if bearer_only:
            return [bearer]
        return [bearer, request.query_params.get("key", ""), request.cookies.get(KEY_COOKIE, "")]

    def allows(self, request: Request, *, bearer_only: bool = False) -> bool:
        return not self.keys or any(key in self.keys for key in self.given(request, bearer_only=bearer_only))

    def key_of(self, request: Request) -> str:
        """The accepted key ``request`` holds ("" where the server has none, or it holds none)."""
        return next((key for key in self.given(request) if key and key in self.keys), "")

    def require(self, answer: Answer, *, bearer_only: bool = False) -> Callable[[Request], Awaitable[None]]:
        """A dependency: lets a request that holds a key through; raises ``Refused(answer(request))``
        otherwise. Async, so that FastAPI runs it on the event loop: a plain ``def`` would cost
        every request a hop to the thread pool and back."""

        async def check(request: Request) -> None:
            if not self.allows(request, bearer_only=bearer_only):
                raise Refused(answer(request))

        return check
