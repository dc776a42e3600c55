"""Postgres: where it is and the connection pool.

One group of the fields of :class:`worker.settings.Settings` (its environment variables keep the
``FACTMATCH_`` prefix and the field's name; the group only says where a setting belongs).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator


class DatabaseSettings(BaseModel):
    """Postgres: where it is and the connection pool."""

    database_url: SecretStr | None = Field(
        None, description="postgresql:// URL; embedded Postgres when unset (CLI only)."
    )
    db_pool_min: int = Field(1, ge=0, le=100)
    db_pool_max: int = Field(4, ge=1, le=100)
    db_connect_timeout_s: float = Field(10.0, gt=0)
    db_pool_timeout_s: float = Field(
        2.0, gt=0, le=60, description="Longest wait for a pooled connection; short, so an outage is retried promptly."
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            raw = value.get_secret_value()
            scheme = urlsplit(raw).scheme if "://" in raw else ""
            # libpq also takes "key=value" strings (host=... dbname=...).
            if scheme not in ("postgresql", "postgres") and not (not scheme and "=" in raw):
                # The URL is a secret: name only its scheme in the error.
                raise ValueError(
                    f"database_url must be a postgresql:// URL or libpq key=value string, not {scheme or 'that'}"
                )
        return value

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise ValueError("FACTMATCH_DATABASE_URL is not set")
        return self.database_url.get_secret_value()
