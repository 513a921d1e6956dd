"""What ``peerblend serve``'s app is given besides the client.

Its own module: the API (serve.py) and the pages (web.py, web_pages.py) both read it,
and neither imports the other for it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class ServerOptions(BaseModel):
    """What the app needs besides the client: accepted keys, how long a turn may take."""

    model_config = ConfigDict(frozen=True)
    api_keys: frozenset[str] = frozenset()
    turn_timeout_s: float = 600.0
    flower_url: str | None = None  # the pages link each turn to its tasks there
    report_dir: Path = Path("docs/results")  # where `peerblend report` wrote (the runs page)
    access_log: bool = True  # one line a request on the peerblend.access logger
