"""Celery side of peerblend: the app, thin tasks, model backends, embedded mode."""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "connect":  # lazy: importing workers must not start building an app
        from workers.embedded import connect

        return connect
    raise AttributeError(name)
