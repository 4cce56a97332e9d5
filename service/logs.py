"""A node's logs: one JSON object per line, each carrying the id of the request it was
written for, so a client that quotes the X-Request-ID of an answer finds its lines.

The id lives in a context variable set by api/request_ids.py for the request's task;
tasks it starts copy the context, so what they log carries it too.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any

request_id: ContextVar[str | None] = ContextVar("worldstate_request_id", default=None)

# What every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """ts (UTC, ISO 8601, ms), level, logger, msg, request_id when there is one, the record's
    extra fields, and exc (the traceback) when an exception was logged."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        rid = request_id.get()
        if rid is not None:
            doc["request_id"] = rid
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                doc[k] = v
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def log_config(level: str, fmt: str, access_log: bool = False) -> dict[str, Any]:
    """A logging.config.dictConfig document (uvicorn's `log_config`) sending uvicorn's loggers
    and worldstate's to stderr in `fmt` ("json" or "text") at `level`; with `access_log`, a
    line for every request whatever the level."""
    formatter: dict[str, Any] = ({"()": f"{__name__}.JsonFormatter"} if fmt == "json" else
                                 {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"})
    lvl = level.upper()
    loggers = {name: {"handlers": ["stderr"], "level": lvl, "propagate": False}
               for name in ("uvicorn", "uvicorn.error", "worldstate", "grpc")}
    if access_log:
        loggers["worldstate.requests"] = {"handlers": ["stderr"], "level": "INFO", "propagate": False}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default",
                                "stream": "ext://sys.stderr"}},
        "loggers": loggers,
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
