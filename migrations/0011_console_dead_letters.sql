-- The console's view of the dead-letter topic: what its own consumer read there, with a short,
-- safe preview of the original (never the whole value: that stays on the topic and, when
-- archived, in dead_letter_payloads). Idempotent under redelivery: one row per topic position.
CREATE TABLE IF NOT EXISTS console_dead_letters (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    reason      text NOT NULL,
    error       text NOT NULL,
    preview     text NOT NULL,
    value_size  integer,
    failed_at   timestamptz NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
);
CREATE INDEX IF NOT EXISTS console_dead_letters_recent ON console_dead_letters (failed_at DESC);
