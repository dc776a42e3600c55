-- Every refit of a version's decision from the moderators' verdicts, and every refusal, with why
-- (trainer/recalibrate.py; `factmatch models refits`). A refit that passed also rewrote the
-- version's decision_models row; this is its history.
CREATE TABLE IF NOT EXISTS decision_refits (
    id              bigserial PRIMARY KEY,
    model_version   text NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    outcome         text NOT NULL CHECK (outcome IN ('refitted', 'refused')),
    reason          text NOT NULL,
    verdicts        integer NOT NULL,
    heldout         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS decision_refits_version ON decision_refits (model_version, at DESC);
