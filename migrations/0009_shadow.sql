-- Shadow evaluation: one ready (fully indexed) version at a time runs beside the active one on a
-- share of live posts without publishing; what it would have answered is kept per post, so
-- agreement, score shifts and (with moderator verdicts) precision can be read before promotion.
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS shadow boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX IF NOT EXISTS model_versions_one_shadow ON model_versions (shadow) WHERE shadow;

CREATE TABLE IF NOT EXISTS shadow_results (
    id                      bigserial PRIMARY KEY,
    model_version           text NOT NULL REFERENCES model_versions (version) ON DELETE CASCADE,
    active_version          text NOT NULL,
    post_id                 text NOT NULL,
    lang                    text,
    active_fact_check_id    text,
    shadow_fact_check_id    text,
    active_score            real,
    shadow_score            real,
    recorded_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS shadow_results_version ON shadow_results (model_version, post_id);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'factmatch_worker') THEN
        GRANT SELECT, INSERT ON shadow_results TO factmatch_worker;
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO factmatch_worker', pg_get_serial_sequence('shadow_results', 'id'));
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'factmatch: cannot grant to the factmatch roles here; grant them by hand';
END $$;
