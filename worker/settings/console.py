"""The moderators' console (`factmatch console`).

One group of the fields of :class:`worker.settings.Settings` (its environment variables keep the
``FACTMATCH_`` prefix and the field's name; the group only says where a setting belongs).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ConsoleSettings(BaseModel):
    """The moderators' console (`factmatch console`)."""

    console_host: str = Field("127.0.0.1", min_length=1, description="Address the console binds (0.0.0.0 in a pod).")
    console_port: int = Field(8080, ge=0, le=65535, description="The console's port; 0 picks a free one.")
    console_group_id: str = Field(
        "factmatch-console", min_length=1, description="The console's own consumer group on the matches topic."
    )
    console_lease_s: float = Field(
        120.0, ge=5, le=3600, description="How long opening an item holds it for one moderator (renewed while open)."
    )
    console_undo_s: float = Field(
        5.0, ge=0, le=300, description="A verdict can be undone this long; then it is published as Feedback."
    )
    console_session_ttl_s: float = Field(43_200.0, ge=60, le=2_592_000, description="A sign-in lasts this long.")
    console_precision_window_s: float = Field(
        604_800.0,
        ge=3600,
        le=31_536_000,
        description="Verdicts of this long ago or later make each tier's live precision on the console's /metrics.",
    )
    console_secure_cookies: bool = Field(
        False, description="Mark the session cookie Secure (set it whenever the console is reached over TLS)."
    )
    console_login_attempts_per_minute: int = Field(
        5, ge=1, le=1000, description="Failed sign-ins per name and per client address before a pause."
    )
    console_proxy_user_header: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9-]{1,100}$",
        description="Take the moderator's name from this header of a trusted proxy (an OIDC proxy) instead of"
        " passwords; the account must exist.",
    )
    console_trusted_proxies: str = Field(
        "",
        pattern=r"^[0-9A-Fa-f.:, ]*$",
        description="Client addresses (comma separated) the identity header is accepted from (required with it).",
    )

    def trusted_proxies(self) -> frozenset[str]:
        """The addresses in ``console_trusted_proxies``."""
        return frozenset(a.strip() for a in self.console_trusted_proxies.split(",") if a.strip())
