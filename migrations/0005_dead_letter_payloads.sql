-- Full originals of dead letters too large for the dead-letter topic (which carries a prefix,
-- the size and the SHA-256): kept here when FACTMATCH_DEAD_LETTER_ARCHIVE is on, by digest.
CREATE TABLE IF NOT EXISTS dead_letter_payloads (
    sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    value       bytea NOT NULL,
    size        integer NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now()
);
