-- The decision model of a version (a calibrated match probability, worker/retrieval/decision.py),
-- stored with it like its tier cuts. From this migration on the tier cuts are cuts on that
-- probability, not on the cosine: cuts fitted before it mean something else, so they go, and
-- `factmatch calibrate` (or the trainer's next promotion) fits both again.
CREATE TABLE IF NOT EXISTS decision_models (
    model_version   text PRIMARY KEY REFERENCES model_versions (version) ON DELETE CASCADE,
    model           jsonb NOT NULL,
    report          jsonb NOT NULL DEFAULT '{}'::jsonb,
    source          text,
    fitted_at       timestamptz NOT NULL DEFAULT now()
);

DELETE FROM score_thresholds
WHERE model_version NOT IN (SELECT model_version FROM decision_models);

-- Fact-checks withheld from tier "match": flagged by a worker's over-match watch (or by hand)
-- until a moderator clears them. Kept after clearing, for the record.
CREATE TABLE IF NOT EXISTS quarantined_fact_checks (
    fact_check_id   text NOT NULL,
    reason          text NOT NULL,
    flagged_by      text,
    flagged_at      timestamptz NOT NULL DEFAULT now(),
    cleared_at      timestamptz,
    cleared_by      text
);
CREATE UNIQUE INDEX IF NOT EXISTS quarantined_fact_checks_open
    ON quarantined_fact_checks (fact_check_id) WHERE cleared_at IS NULL;

-- Workers read decision models and quarantines, and flag over-matching fact-checks themselves.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'factmatch_worker') THEN
        GRANT SELECT ON decision_models, quarantined_fact_checks TO factmatch_worker;
        GRANT INSERT ON quarantined_fact_checks TO factmatch_worker;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'factmatch: cannot grant to the factmatch roles here; grant them by hand';
END $$;
