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

from fastapi import Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from pipeline.explain import live_label
from workers.auth import KEY_COOKIE, KeyCheck
from workers.server_options import ServerOptions

HERE = Path(__file__).resolve().parent
TEMPLATES, STATIC = HERE / "templates", HERE / "static"
KEY_WANTED = "this server wants an API key: Authorization: Bearer <key>, or ?key=<key>"


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
    """Templates, and what every page goes through: the key check (``reader``, ``json_reader``
    and ``poster``: FastAPI dependencies, see ``workers.auth``) and a POST's forgery check."""

    def __init__(self, options: ServerOptions) -> None:
        self.keys = KeyCheck(options.api_keys)
        self.templates = Jinja2Templates(directory=TEMPLATES)
        self.templates.env.globals["live_label"] = live_label
        self.guard = FormGuard()
        # a page answers a request without a key with the key form; what its scripts read, with
        # JSON; a POST, as its Accept header asks (the chat box's script wants JSON)
        self.reader = Depends(self.keys.require(self._key_form))
        self.json_reader = Depends(self.keys.require(_key_json))
        self.poster = Depends(
            self.keys.require(lambda request: (_key_json if wants_json(request) else self._key_form)(request))
        )

    def _key_form(self, request: Request) -> Response:
        return self.render(request, "denied.html", {"message": KEY_WANTED}, status_code=401)

    def key_of(self, request: Request) -> str:
        """The accepted key this request holds ("" where the server has none)."""
        return self.keys.key_of(request)

    def forged(self, request: Request, token: str) -> Response | None:
        """None when a POST (let through by ``poster``) shows no sign of forgery; else the 403."""
        if (why := self.guard.forged(request, token, self.key_of(request))) is None:
            return None
        if wants_json(request):
            return JSONResponse({"error": why}, status_code=403)
        return self.render(request, "denied.html", {"message": why, "title": "Refused"}, status_code=403)

    def render(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        context = {"csrf": self.guard.token(self.key_of(request)), **context}
        response = self.templates.TemplateResponse(request, name, context, status_code=status_code)
        key = request.query_params.get("key", "")
        if key and key in self.keys.keys:  # given once in the address: later pages send it as a cookie
            response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict")
        return response


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _key_json(_: Request) -> Response:
    return JSONResponse({"error": KEY_WANTED}, status_code=401)


def file_in(folder: Path, name: str, *, suffixes: tuple[str, ...]) -> Response:
    """A file directly in ``folder`` with one of ``suffixes``, or 404 (no other path can be named)."""
    path = folder / name
    if not (folder.is_dir() and path.suffix in suffixes and path in folder.iterdir() and path.is_file()):
        return JSONResponse({"error": f"no file {name!r}"}, status_code=404)
    return FileResponse(path, media_type=mimetypes.guess_type(name)[0], headers={"Cache-Control": "no-cache"})
