-- A claim said again is answered once: every worker of the group looks a post's claim up here
-- before encoding it, and reuses the answer of the first post that made the same claim under the
-- same model version, decision model, search settings and corpus state. The corpus state is a
-- generation per scope ('*' for the fact-checks themselves, a model version for its vectors),
-- bumped by trigger in the very transaction that changes them, so an answer can never be
-- stored under a generation whose changes its search did not see (see worker/storage/answers.py).
CREATE TABLE IF NOT EXISTS corpus_generations (
    scope       text PRIMARY KEY,
    generation  bigint NOT NULL DEFAULT 0,
    -- The transaction that bumped it last: one bump per transaction, however many rows it wrote.
    bumped_by   xid8
);

CREATE OR REPLACE FUNCTION factmatch_bump_generation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    row_scope text := '*';
BEGIN
    IF TG_TABLE_NAME = 'fact_check_embeddings' THEN
        row_scope := CASE WHEN TG_OP = 'DELETE' THEN OLD.model_version ELSE NEW.model_version END;
    END IF;
    INSERT INTO corpus_generations AS g (scope, generation, bumped_by)
    VALUES (row_scope, 1, pg_current_xact_id())
    ON CONFLICT (scope) DO UPDATE SET generation = g.generation + 1, bumped_by = pg_current_xact_id()
        WHERE g.bumped_by IS DISTINCT FROM pg_current_xact_id();
    RETURN NULL;
END $$;

-- Deferred to commit: the generation row is locked for the last instant of the transaction
-- only, after every row it changed, so writers never wait on each other in a cycle.
DROP TRIGGER IF EXISTS fact_checks_generation ON fact_checks;
CREATE CONSTRAINT TRIGGER fact_checks_generation AFTER INSERT OR UPDATE OR DELETE ON fact_checks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION factmatch_bump_generation();
DROP TRIGGER IF EXISTS fact_check_embeddings_generation ON fact_check_embeddings;
CREATE CONSTRAINT TRIGGER fact_check_embeddings_generation AFTER INSERT OR UPDATE OR DELETE ON fact_check_embeddings
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION factmatch_bump_generation();

CREATE TABLE IF NOT EXISTS claim_answers (
    -- A digest of the claim key, its language, the model version, the decision model, the search
    -- settings and quarantine list the worker searched with, and both generations.
    answer_key     text PRIMARY KEY,
    post_id        text NOT NULL,
    model_version  text NOT NULL,
    -- The published matches, as the wire's Match objects.
    matches        jsonb NOT NULL,
    answered_at    timestamptz NOT NULL DEFAULT now()
);
-- Answers older than the reuse window are never read and are deleted in batches by this index.
CREATE INDEX IF NOT EXISTS claim_answers_answered_at ON claim_answers (answered_at);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'factmatch_worker') THEN
        GRANT SELECT ON corpus_generations TO factmatch_worker;
        GRANT SELECT, INSERT, UPDATE, DELETE ON claim_answers TO factmatch_worker;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'factmatch: cannot grant to the factmatch roles here; grant them by hand';
END $$;
