-- Calibrated score thresholds per model version and language ('*' = every language), for the
-- two tiers moderators work with: "match" (act on it) and "suggestion" (worth a look).
CREATE TABLE IF NOT EXISTS score_thresholds (
    model_version       text NOT NULL REFERENCES model_versions (version) ON DELETE CASCADE,
    lang                text NOT NULL,
    tier                text NOT NULL CHECK (tier IN ('match', 'suggestion')),
    threshold           double precision NOT NULL,
    target_precision    double precision NOT NULL CHECK (target_precision > 0 AND target_precision <= 1),
    fitted_precision    double precision NOT NULL,
    fitted_recall       double precision NOT NULL,
    support             integer NOT NULL,
    fitted_at           timestamptz NOT NULL DEFAULT now(),
    source              text,
    PRIMARY KEY (model_version, lang, tier)
);
