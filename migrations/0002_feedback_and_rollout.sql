-- Moderator verdicts on published matches: the trainer's freshest labelled pairs.
CREATE TABLE IF NOT EXISTS match_feedback (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    post_id        text NOT NULL,
    post_text      text NOT NULL CHECK (length(btrim(post_text)) > 0),
    fact_check_id  text NOT NULL,
    verdict        text NOT NULL CHECK (verdict IN ('confirm', 'reject')),
    moderator      text NOT NULL,
    model_version  text,
    note           text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    received_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS match_feedback_created_at ON match_feedback (created_at);

-- Where a version's artifact, training data snapshot and evaluation live.
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS data_snapshot jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS retired_at timestamptz;
