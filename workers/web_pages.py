"""What every page of ``peerblend serve`` goes through: the templates, the key check, the
forms' forgery guard, and the static files.

Apart from the routes (web.py, web_chat.py, web_evaluate.py), which all take a ``Pages``
and none of which needs another's module for it.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from pipeline.explain import live_label
from workers.server_options import ServerOptions

HERE = Path(__file__).resolve().parent
TEMPLATES, STATIC = HERE / "templates", HERE / "static"
KEY_COOKIE = "peerblend_key"


class FormGuard:
    """The forms' token, and the check every POST of a page goes through."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)  # per process: a restart makes open forms stale

    def token(self, key: str) -> str:
        """The token for forms rendered to a reader holding ``key`` ("" without keys)."""
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()[:40]

    def forged(self, request: Request, token: str, key: str) -> str | None:
        """Why this POST is refused as possibly forged; None when it may go on."""
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
            return f"this form was posted from another site ({origin}); open the page here and ask again"
        if not hmac.compare_digest(token, self.token(key)):
            return "this form has expired (the server restarted): reload the page and ask again"
        return None


class Pages:
    """Templates and the key check every page goes through."""

    def __init__(self, options: ServerOptions) -> None:
        self.keys = options.api_keys
        self.templates = Jinja2Templates(directory=TEMPLATES)
        self.templates.env.globals["live_label"] = live_label
        self.guard = FormGuard()

    def _given(self, request: Request) -> list[str]:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return [bearer, request.query_params.get("key", ""), request.cookies.get(KEY_COOKIE, "")]

    def denied(self, request: Request, *, json: bool = False) -> Response | None:
        """None when the request may read; else the 401 answer (a key form, or JSON)."""
        if not self.keys or any(key in self.keys for key in self._given(request)):
            return None
        message = "this server wants an API key: Authorization: Bearer <key>, or ?key=<key>"
        if json:
            return JSONResponse({"error": message}, status_code=401)
        return self.render(request, "denied.html", {"message": message}, status_code=401)

    def key_of(self, request: Request) -> str:
        """The accepted key this request holds ("" where the server has none)."""
        return next((key for key in self._given(request) if key and key in self.keys), "")

    def refused(self, request: Request, token: str) -> Response | None:
        """None when a POST may go on: a key where one is wanted, and no sign of forgery (403)."""
        json = "application/json" in request.headers.get("accept", "")
        if (denied := self.denied(request, json=json)) is not None:
            return denied
        if (why := self.guard.forged(request, token, self.key_of(request))) is None:
            return None
        if json:
            return JSONResponse({"error": why}, status_code=403)
        return self.render(request, "denied.html", {"message": why, "title": "Refused"}, status_code=403)

    def render(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        context = {"csrf": self.guard.token(self.key_of(request)), **context}
        response = self.templates.TemplateResponse(request, name, context, status_code=status_code)
        key = request.query_params.get("key", "")
        if key and key in self.keys:  # given once in the address: later pages send it as a cookie
            response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict")
        return response


def file_in(folder: Path, name: str, *, suffixes: tuple[str, ...]) -> Response:
    """A file directly in ``folder`` with one of ``suffixes``, or 404 (no other path can be named)."""
    path = folder / name
    if not (folder.is_dir() and path.suffix in suffixes and path in folder.iterdir() and path.is_file()):
        return JSONResponse({"error": f"no file {name!r}"}, status_code=404)
    return FileResponse(path, media_type=mimetypes.guess_type(name)[0], headers={"Cache-Control": "no-cache"})
