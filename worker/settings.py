"""One configuration object for every factmatch process.

Built once at start-up (``Settings()`` reads ``FACTMATCH_*`` variables and an optional
``.env``) and passed down; modules never read the environment themselves. Every value is
validated here so that a worker with a bad knob refuses to start instead of failing on its
first batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.domain import ModeName

ENV_PREFIX = "FACTMATCH_"


class Settings(BaseSettings):
    """Every knob of the worker, the CLI and the trainer."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        validate_default=True,
        # Errors must never echo a value back: it may be a password or a URL with one.
        hide_input_in_errors=True,
    )

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "localhost:9092", min_length=1, description="Kafka bootstrap servers, comma separated."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    topic_posts: str = Field("posts", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    topic_matches: str = Field("matches", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    topic_dead_letter: str = Field("posts.dlq", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    topic_factchecks: str = Field("factchecks", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    topic_feedback: str = Field("match-feedback", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    topic_trending: str = Field(
        "trending-fact-checks",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Where the trending fact-checks are published every claims_report_interval_s.",
    )
    topic_emerging: str = Field(
        "emerging-claims",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Where the emerging claims (no fact-check yet) are published every claims_report_interval_s.",
    )
    claims_report_interval_s: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="How often one worker of the group publishes the trending fact-checks and the emerging claims"
        " (0: never; the console and `factmatch claims` still show them).",
    )
    group_id: str = Field("factmatch-worker", min_length=1)
    indexer_group_id: str = Field("factmatch-indexer", min_length=1)
    feedback_group_id: str = Field("factmatch-feedback", min_length=1)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(
        6_000, ge=3_000, le=300_000, description="Consumer session; a dead worker's partitions move after this."
    )
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    kafka_metadata_max_age_ms: int = Field(
        5_000, ge=500, le=600_000, description="Longest before a consumer sees new topics or partitions."
    )
    kafka_max_request_bytes: int = Field(
        1_048_576, ge=65_536, description="Largest message the brokers accept (their message.max.bytes)."
    )
    topic_partitions: int = Field(3, ge=1, le=10_000, description="Partitions `factmatch topics` creates.")
    topic_replication: int = Field(1, ge=1, le=10, description="Replication factor `factmatch topics` creates.")

    # --- Micro-batching ----------------------------------------------------------------
    batch_max_records: int = Field(64, ge=1, le=10_000, description="Most records fetched into one batch.")
    batch_max_wait_ms: int = Field(50, ge=1, le=60_000, description="Longest wait for a batch to fill.")
    batch_token_budget: int | None = Field(
        None,
        ge=16,
        description="Most padded tokens (rows x longest row) one encoder call may take; unset: 1024 on CPU,"
        " where small calls were measured fastest, 16384 on a GPU.",
    )
    max_post_chars: int = Field(20_000, ge=1, description="Posts longer than this are dead-lettered.")
    max_record_bytes: int = Field(1_048_576, ge=1_024, description="Records larger than this are dead-lettered unread.")
    max_json_depth: int = Field(32, ge=2, le=500, description="Deeper JSON is dead-lettered before parsing.")
    dead_letter_max_value_bytes: int = Field(
        262_144, ge=1_024, description="Original bytes a dead letter carries; beyond, a prefix plus size and SHA-256."
    )
    dead_letter_archive: bool = Field(
        False, description="Keep the full original of every truncated dead letter in Postgres."
    )
    max_record_attempts: int = Field(
        3, ge=1, le=100, description="A record whose batch failed this often is dead-lettered with the last error."
    )
    factchecks_batch_max_records: int = Field(256, ge=1, le=10_000, description="Fact-check changes per batch.")
    factchecks_batch_max_wait_ms: int = Field(200, ge=1, le=60_000)
    feedback_batch_max_records: int = Field(500, ge=1, le=10_000, description="Moderator verdicts per batch.")
    feedback_batch_max_wait_ms: int = Field(200, ge=1, le=60_000)

    # --- Postgres ----------------------------------------------------------------------
    database_url: SecretStr | None = Field(
        None, description="postgresql:// URL; embedded Postgres when unset (CLI only)."
    )
    db_pool_min: int = Field(1, ge=0, le=100)
    db_pool_max: int = Field(4, ge=1, le=100)
    db_connect_timeout_s: float = Field(10.0, gt=0)
    db_pool_timeout_s: float = Field(
        2.0, gt=0, le=60, description="Longest wait for a pooled connection; short, so an outage is retried promptly."
    )

    # --- Model -------------------------------------------------------------------------
    model: str | None = Field(None, description="Bootstrap model: a local directory or a hub name.")
    model_version: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._:-]{1,100}$", description="Version name for the bootstrap model."
    )
    model_store: Path = Field(Path("models"), description="Directory where trained model versions live.")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    autocast: Literal["auto", "off", "bfloat16"] = Field(
        "auto",
        description="Encode posts with a float32 model on CPU under bfloat16 autocast (matrix products in bf16)"
        " where the CPU computes bf16 natively (AVX-512 BF16 or AMX); fact-checks stay float32, so the index is"
        " exact. auto and bfloat16: the same (bfloat16 logs when the CPU lacks it); off: float32. Default model,"
        " 2 cores: 1.64-1.93x the posts/s, cosine to float32 >= 0.99998, dev MAP@5 +0.0009, the same tiers"
        " (docs/measurements.md).",
    )
    backend: Literal["torch", "onnx"] = Field(
        "torch",
        description="onnx: ONNX Runtime on CPU, exported once per model into model_store/onnx; a restart then"
        " imports no torch and answers in seconds. torch on GPUs.",
    )
    onnx_int8: bool = Field(
        False, description="Quantise the ONNX export's weights to int8 (faster; see README for its agreement)."
    )
    query_prompt: str | None = Field(None, description="Overrides the model's own query prompt.")
    query_prompt_name: str = "query"
    document_prompt_name: str = "document"
    max_seq_length: int | None = Field(
        None, ge=8, le=32_768, description="Longest input in tokens (default: the model's; never past its positions)."
    )
    attn_implementation: Literal["eager", "sdpa", "flex_attention", "flash_attention_2"] | None = Field(
        None,
        description="Attention kernel (default: the model's choice). Gemma2 takes eager (exact soft-capping),"
        " flex_attention or flash_attention_2 (the flash-attn package), not sdpa.",
    )
    encode_batch_size: int = Field(
        32, ge=1, le=4096, description="Most posts per encoder call; the next call encodes while this one is searched."
    )
    embedding_cache_size: int = Field(
        10_000, ge=0, le=10_000_000, description="Recent post texts whose vectors are reused (0: off)."
    )
    reuse_window_s: float = Field(
        3_600.0,
        ge=0,
        le=30 * 86_400,
        description="How long a claim's answer is reused, by every worker of the group, for posts repeating it"
        " (same claim text, language, model version and corpus); 0: every post is searched.",
    )
    claim_clusters: bool = Field(
        True, description="Put every answered post in a claim cluster (results carry cluster_id and its summary)."
    )
    cluster_similarity: float = Field(
        0.92,
        ge=0,
        le=1,
        description="Cosine similarity to a cluster's centroid at or above which a post joins it (else it starts"
        " one). Model-specific: 0.92 for the default model, about 0.8 for MiniLM (docs/measurements.md).",
    )
    cluster_window_s: float = Field(
        7 * 86_400,
        gt=0,
        le=365 * 86_400,
        description="A cluster no post joined for this long is not joined again (and is deleted after twice as long).",
    )
    rematch_interval_s: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="How often one worker of the group checks whether the fact-checks changed and, if they did,"
        " searches the recent claim clusters nobody had a fact-check for again: their posts a new fact-check"
        " now matches get an updated result (rematched) on the matches topic. 0: never.",
    )
    rematch_max_clusters: int = Field(
        500, ge=1, le=100_000, description="Most unmatched clusters one re-match pass searches (most recent first)."
    )
    rematch_max_posts: int = Field(
        2_000, ge=1, le=1_000_000, description="Most posts one re-match pass encodes and searches again."
    )
    result_text_max_chars: int = Field(
        2_000,
        ge=0,
        le=100_000,
        description="Characters of the post's text each result carries for whoever shows it (0: none).",
    )
    trust_remote_code: bool = False
    model_poll_interval_s: float = Field(
        5.0, gt=0, le=600, description="Longest a worker lags a model switch when NOTIFY is lost."
    )
    retain_versions: int = Field(2, ge=0, le=50, description="Retired versions kept indexed for rollback.")

    # --- Trainer (defaults: the reference model's recipe) ----------------------------------
    train_learning_rate: float = Field(2e-4, gt=0, lt=1)
    train_epochs: float = Field(1.0, gt=0, le=100)
    train_max_steps: int = Field(-1, ge=-1, description="Overrides epochs when positive.")
    train_batch_size: int = Field(64, ge=2, le=65_536, description="Per-device batch (in-batch negatives).")
    train_mini_batch_size: int = Field(16, ge=1, le=4096, description="GradCache mini-batch that fits memory.")
    train_warmup_ratio: float = Field(0.1, ge=0, lt=1)
    train_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    train_eval_fraction: float = Field(0.1, gt=0, lt=1, description="Held-out share when no eval split is given.")
    train_seed: int = 42
    train_method: Literal["full", "lora"] = Field(
        "full",
        description="lora: train low-rank adapters (PEFT) on a frozen base, merged into the saved version;"
        " what a 9B encoder needs (see `factmatch train --plan`).",
    )
    lora_rank: int = Field(16, ge=1, le=1024)
    lora_alpha: int = Field(32, ge=1, le=4096)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: str = Field(
        "all-linear",
        pattern=r"^(all-linear|[A-Za-z_][A-Za-z0-9_.]*(,[A-Za-z_][A-Za-z0-9_.]*)*)$",
        description="Comma-separated module names the adapters wrap (q_proj,v_proj), or all-linear.",
    )
    train_gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: far less memory for about a third more time."
    )
    train_gather_across_devices: bool = Field(
        True,
        description="Under torchrun, every rank's documents are in-batch negatives for every rank's queries"
        " (CachedMultipleNegativesRankingLoss gather_across_devices).",
    )
    train_fsdp: bool = Field(
        False,
        description="Under torchrun, a full fine-tune shards weights, gradients and optimizer state (FSDP)"
        " instead of copying them to every GPU (DDP).",
    )
    train_gpu_memory_gib: float | None = Field(
        None, gt=0, le=100_000, description="Memory per training device the plan must fit (default: the GPU's own)."
    )
    shadow_share: float = Field(
        0.1, ge=0, le=1, description="Share of posts the shadow version (if any) also answers, unpublished."
    )
    gate_shadow_min_posts: int = Field(
        0, ge=0, description="Shadow posts a version needs before promotion (0: no shadow evidence required)."
    )
    gate_shadow_min_agreement: float = Field(
        0.0, ge=0, le=1, description="Least rank-1 agreement with the active version in shadow for promotion."
    )
    gate_metric: Literal["ndcg@10", "map@100", "mrr@10", "accuracy@1", "accuracy@5", "recall@10"] = "ndcg@10"
    gate_margin: float = Field(0.0, ge=-1, le=1, description="A candidate must beat the active version by this.")

    # --- Search ------------------------------------------------------------------------
    retrieval_mode: ModeName = Field(
        "hybrid", description="Dense vectors, Postgres full-text, or both fused (reciprocal rank fusion)."
    )
    # Chosen on CheckThat! 2020 dev (benchmarks/fusion_sweep.py) for MiniLM base and fine-tuned.
    rrf_k: int = Field(10, ge=1, le=10_000)
    dense_weight: float = Field(1.0, ge=0, le=100)
    lexical_weight: float = Field(0.5, ge=0, le=100)
    retrieval_candidates: int = Field(50, ge=1, le=1000, description="Candidates each retriever contributes.")
    language_aware_fusion: bool = Field(
        True,
        description="A fact-check in another language than the post is not ranked down for lacking lexical overlap.",
    )
    detect_language: bool = Field(True, description="Identify the language of posts that carry no lang.")
    language_min_confidence: float = Field(0.5, ge=0, le=1)
    decision_pool: int = Field(
        20, ge=1, le=1000, description="Fused candidates the decision model scores; rank 1 is its most probable."
    )
    rerank_top_n: int = Field(
        0,
        ge=0,
        le=200,
        description="Candidates per post the version's cross-encoder rereads (0: off). Costs one"
        " transformer pass per candidate: see README's reranking figures before turning it on.",
    )
    publish_untiered: bool = Field(
        False,
        description="Also publish matches below every tier (the version has a decision model); off: a post"
        " with nothing above the 'suggestion' cut gets an empty match list.",
    )
    overmatch_window: int = Field(2000, ge=10, le=1_000_000, description="Recent posts the over-match watch sees.")
    overmatch_share: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Share of the window's posts one fact-check may be shown to (any tier) before it is flagged.",
    )
    overmatch_factor: float = Field(
        5.0, ge=1, le=1000, description="...and this many times its own baseline share (over earlier windows)."
    )
    overmatch_min_matches: int = Field(20, ge=1, description="Fewest matches in the window before flagging.")
    overmatch_quarantine: bool = Field(
        True,
        description="Demote a flagged fact-check one tier (never 'match'; a suggestion is withheld)"
        " until `factmatch quarantine clear`.",
    )
    quarantine_refresh_s: float = Field(10.0, gt=0, le=3600, description="How often workers re-read quarantines.")
    tier_match_precision: float = Field(0.95, gt=0, le=1, description="Target precision of the 'match' tier.")
    tier_suggestion_precision: float = Field(0.8, gt=0, le=1, description="Target precision of 'suggestion'.")
    tier_match_false_alarm: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Most posts with no fact-check that may get a 'match' (share, fitted open-set with the"
        " precision target; the stricter cut wins). Unset: precision target only.",
    )
    tier_suggestion_false_alarm: float | None = Field(
        0.1,
        gt=0,
        lt=1,
        description="Most posts with no fact-check that may be shown anything ('suggestion' or 'match'),"
        " fitted open-set like the match budget. Unset: precision target only.",
    )
    tier_min_support: int = Field(20, ge=1, description="Fewest labelled candidates above a cut to fit it.")
    recalibrate_min_verdicts: int = Field(
        200,
        ge=1,
        description="New verdicts since the active version's decision was fitted before `factmatch recalibrate`"
        " refits it.",
    )
    recalibrate_heldout_share: float = Field(
        0.3, gt=0, lt=1, description="Share of the verdicts' posts held out to judge a refit (by post id)."
    )
    recalibrate_min_judged: int = Field(
        20, ge=1, description="Held-out verdicts on what a decision shows in a tier group before it is judged there."
    )
    recalibrate_margin: float = Field(
        0.0, ge=0, le=1, description="Held-out precision a refit may lose against the decision in use."
    )
    top_k: int = Field(5, ge=1, le=100)
    min_score: float = Field(0.3, ge=-1.0, le=1.0, description="Cosine similarity a match must reach.")
    ef_search: int = Field(100, ge=1, le=1000)
    recall_sample_share: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Share of searches re-run exactly in the background to export the index's recall@10 (0: off).",
    )
    hnsw_m: int = Field(16, ge=2, le=100)
    hnsw_ef_construction: int = Field(
        200,
        ge=4,
        le=1000,
        description="Build-time candidate list: 200 gave more recall per ms of search than 64 at 100k fact-checks"
        " (benchmarks/results/ann_100k_2core.txt), for a build about 3x as long.",
    )

    # --- Images (posts' and fact-checks' images, matched by PDQ hash) ------------------
    images: bool = Field(
        True, description="Read the images posts and fact-checks carry and match them by perceptual hash (PDQ)."
    )
    image_max_per_post: int = Field(
        4, ge=1, le=32, description="Images read per post or fact-check; the rest are listed as skipped."
    )
    image_max_bytes: int = Field(
        10 * 1024 * 1024, ge=1_024, le=100 * 1024 * 1024, description="Largest image fetched or taken inline."
    )
    image_max_pixels: int = Field(
        40_000_000,
        ge=10_000,
        le=500_000_000,
        description="Largest image decoded (a decompression bomb is refused before).",
    )
    image_fetch_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Longest one image's fetch takes, redirects included."
    )
    image_connect_timeout_s: float = Field(2.0, gt=0, le=30)
    image_max_redirects: int = Field(3, ge=0, le=10)
    image_batch_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Longest a batch waits for its images; later ones are reported as timeout."
    )
    image_fetch_concurrency: int = Field(8, ge=1, le=256, description="Images fetched at once by one worker.")
    image_allow_networks: str = Field(
        "",
        description="Comma-separated CIDRs images may be fetched from although not public (a platform's CDN inside"
        " a private network). By default only global addresses: loopback, private, link-local (the metadata"
        " service) and the like are refused, after DNS and on every redirect.",
    )
    image_hosts: str = Field(
        "", description="Comma-separated host names (and their subdomains) that alone may be fetched; empty: any host."
    )
    image_ocr: Literal["auto", "tesseract", "off"] = Field(
        "auto",
        description="Read the text in posts' images with Tesseract (auto: when it is installed, logged either way;"
        " tesseract: refuse to start without it) and search it as a query of its own.",
    )
    image_ocr_langs: str = Field(
        "eng+spa+fra+deu+por",
        pattern=r"^[a-z_]{3,12}(\+[a-z_]{3,12})*$",
        description="Tesseract's languages for image text, '+'-joined (each needs its data: tesseract-ocr-<lang>).",
    )
    image_ocr_timeout_s: float = Field(10.0, gt=0, le=120, description="Longest OCR of one image.")
    image_ocr_min_confidence: float = Field(
        60.0, ge=0, le=100, description="Words read with a lower confidence (0-100) are left out of an image's text."
    )
    image_match_distance: int = Field(
        31,
        ge=0,
        le=128,
        description="PDQ Hamming distance (of 256 bits) at or below which a post's image is a fact-check's picture"
        " (hasher-matcher-actioner's default).",
    )

    # --- Failure handling --------------------------------------------------------------
    retry_attempts: int = Field(5, ge=1, le=50, description="Tries of a batch against an unhealthy dependency.")
    retry_backoff_initial_s: float = Field(0.5, gt=0, le=60)
    retry_backoff_max_s: float = Field(
        2.0, gt=0, le=300, description="Longest pause between retries: bounds recovery once a dependency is back."
    )
    shutdown_grace_s: float = Field(30.0, gt=0, le=3600)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_port: int = Field(9400, ge=0, le=65535, description="/metrics, /healthz, /readyz; 0 picks a free port.")
    metrics_host: str = Field(
        "0.0.0.0", min_length=1, description="Address the metrics and health server binds (127.0.0.1: local only)."
    )
    metrics_enabled: bool = True
    lag_interval_s: float = Field(5.0, gt=0, le=3600, description="How often lag and partition coverage are read.")
    unserved_partition_after_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="A partition with waiting records that no group member has committed on for this long "
        "is reported unserved (warning, metric, readiness).",
    )

    # --- Moderators' console (`factmatch console`) --------------------------------------
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

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bootstrap server {server!r} is not host:port")
        return value

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

    @field_validator("image_allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        import ipaddress

        for part in (p.strip() for p in value.split(",")):
            if part:
                try:
                    ipaddress.ip_network(part, strict=False)
                except ValueError as exc:
                    raise ValueError(f"image_allow_networks: {part!r} is not a network (CIDR)") from exc
        return value

    def trusted_proxies(self) -> frozenset[str]:
        """The addresses in ``console_trusted_proxies``."""
        return frozenset(a.strip() for a in self.console_trusted_proxies.split(",") if a.strip())

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

    def token_budget(self, device: str) -> int:
        """The encoder call's padded-token budget on ``device`` (a resolved device name)."""
        if self.batch_token_budget is not None:
            return self.batch_token_budget
        # Measured on 2 CPU cores (multilingual-e5-small, CheckThat! tweets): calls of about
        # 1,000 padded tokens ran 1.23x the texts/s of 32-row calls; a GPU wants large calls.
        return 1024 if device == "cpu" else 16_384

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

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise ValueError(f"{ENV_PREFIX}DATABASE_URL is not set")
        return self.database_url.get_secret_value()
