"""One configuration object for every factmatch process.

Built once at start-up (``Settings()`` reads ``FACTMATCH_*`` variables and an optional
``.env``) and passed down; modules never read the environment themselves. Every value is
validated here so that a worker with a bad knob refuses to start instead of failing on its
first batch.

The fields live in groups, one module each (``kafka``, ``batching``, ``database``, ``model``,
``trainer``, ``claims``, ``search``, ``images``, ``failures``, ``console``): a new setting goes into its
group's module; ``Settings`` is all of them at once, so its environment variables stay
``FACTMATCH_`` + the field's name and every caller reads ``settings.<field>``. Rules that tie
fields of several groups together are checked here.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.settings.batching import BatchingSettings
from worker.settings.claims import ClaimSettings
from worker.settings.console import ConsoleSettings
from worker.settings.database import DatabaseSettings
from worker.settings.failures import FailureSettings
from worker.settings.images import ImageSettings
from worker.settings.kafka import KafkaSettings
from worker.settings.model import ModelSettings
from worker.settings.search import SearchSettings
from worker.settings.trainer import TrainerSettings

ENV_PREFIX = "FACTMATCH_"

__all__ = ["ENV_PREFIX", "Settings"]


# Listed last group first: pydantic orders fields from the last base to the first, so the
# fields (and the chart's generated schema) keep the order of the groups below, Kafka first.
class Settings(
    ConsoleSettings,
    FailureSettings,
    ImageSettings,
    SearchSettings,
    ClaimSettings,
    TrainerSettings,
    ModelSettings,
    DatabaseSettings,
    BatchingSettings,
    KafkaSettings,
    BaseSettings,
):
    """Every knob of the worker, the CLI and the trainer."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        validate_default=True,
        # Errors must never echo a value back: it may be a password or a URL with one.
        hide_input_in_errors=True,
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.tier_suggestion_precision > self.tier_match_precision:
            raise ValueError("tier_suggestion_precision must not exceed tier_match_precision")
        budgets = (self.tier_match_false_alarm, self.tier_suggestion_false_alarm)
        if None not in budgets and budgets[1] < budgets[0]:  # type: ignore[operator]
            # What shows a match also shows something: the suggestion budget holds both tiers.
            raise ValueError("tier_suggestion_false_alarm must not be below tier_match_false_alarm")
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("db_pool_min must not exceed db_pool_max")
        if self.rerank_band_low > self.rerank_band_high:
            raise ValueError("rerank_band_low must not exceed rerank_band_high")
        if self.claim_clusters and self.reuse_window_s > self.cluster_window_s:
            # A repeat joins its origin's cluster, which must still be there.
            raise ValueError("reuse_window_s must not exceed cluster_window_s")
        if self.backend == "onnx" and self.device not in ("auto", "cpu"):
            raise ValueError("backend onnx runs on CPU: set device=cpu (or auto), or backend=torch on a GPU")
        if self.onnx_int8 and self.backend != "onnx":
            raise ValueError("onnx_int8 needs backend=onnx")
        if self.train_fsdp and self.train_method != "full":
            raise ValueError(
                "train_fsdp shards a full fine-tune; with train_method=lora the adapters are small: use DDP"
            )
        if self.retry_backoff_initial_s > self.retry_backoff_max_s:
            raise ValueError("retry_backoff_initial_s must not exceed retry_backoff_max_s")
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError("SASL protocols need kafka_sasl_mechanism, kafka_sasl_username and kafka_sasl_password")
        topics = [
            self.topic_posts,
            self.topic_matches,
            self.topic_dead_letter,
            self.topic_factchecks,
            self.topic_feedback,
            self.topic_trending,
            self.topic_emerging,
        ]
        if len(set(topics)) != len(topics):
            raise ValueError("the topic names must differ")
        if len({self.group_id, self.indexer_group_id, self.feedback_group_id, self.console_group_id}) != 4:
            raise ValueError("group_id, indexer_group_id, feedback_group_id and console_group_id must differ")
        if self.console_proxy_user_header and not self.trusted_proxies():
            raise ValueError("console_proxy_user_header needs console_trusted_proxies (the proxy's addresses)")
        # A dead letter carries its original base64-encoded (4/3) plus headers and fields.
        if self.dead_letter_max_value_bytes * 4 // 3 + 65_536 > self.kafka_max_request_bytes:
            raise ValueError(
                "dead_letter_max_value_bytes must leave room within kafka_max_request_bytes (x4/3 + 64 KiB)"
            )
        # A batch that retries longer than the poll interval would get the worker evicted from its group.
        worst_case = self.retry_attempts * self.retry_backoff_max_s
        if worst_case * 1000 >= self.max_poll_interval_ms:
            raise ValueError(
                f"retry_attempts x retry_backoff_max_s ({worst_case:.0f}s) must stay below max_poll_interval_ms"
            )
        return self

    def secrets(self) -> list[str]:
        """Every secret value, and the password inside the database URL, for log redaction."""
        found: list[str] = []
        if self.kafka_sasl_password is not None:
            found.append(self.kafka_sasl_password.get_secret_value())
        if self.database_url is not None:
            raw = self.database_url.get_secret_value()
            found.append(raw)
            password = urlsplit(raw).password if "://" in raw else None
            if password:
                found.append(password)
            for part in raw.split():
                if part.startswith("password="):
                    found.append(part.removeprefix("password="))
        return [s for s in found if len(s) >= 3]
