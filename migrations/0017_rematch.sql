-- Re-matching the claims nobody had a fact-check for (worker/storage/rematch.py): when a version's
-- corpus changes, the clusters its worker abstained on are searched again, and the posts of those
-- a new fact-check now matches get an updated result. Each post keeps what an update needs.
ALTER TABLE post_clusters ADD COLUMN IF NOT EXISTS lang text;
ALTER TABLE post_clusters ADD COLUMN IF NOT EXISTS platform text;
ALTER TABLE post_clusters ADD COLUMN IF NOT EXISTS url text;

-- The corpus generation of a version's vectors (corpus_generations) its unmatched clusters were
-- last searched against: a pass runs only when the generation moved.
CREATE TABLE IF NOT EXISTS rematch_state (
    model_version  text PRIMARY KEY REFERENCES model_versions (version) ON DELETE CASCADE,
    generation     bigint NOT NULL,
    checked_at     timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'factmatch_worker') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON rematch_state TO factmatch_worker;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'factmatch: cannot grant to the factmatch roles here; grant them by hand';
END $$;
