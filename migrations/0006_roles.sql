-- Least-privilege roles. factmatch_worker is what a worker's login needs: read the corpus, the
-- embeddings and the registry; apply fact-check changes from its topic (rows only: no DDL);
-- write moderator verdicts and archived dead letters. It cannot change the registry, build or
-- drop indexes, or alter the schema. factmatch_trainer is granted the migrating role itself:
-- promotion builds HNSW indexes, which PostgreSQL allows only to a table's owner.
-- Roles are created when the migrating user may (CREATEROLE); otherwise create them by hand
-- and run the migration again to grant.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'factmatch_worker') THEN
        CREATE ROLE factmatch_worker NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'factmatch_trainer') THEN
        CREATE ROLE factmatch_trainer NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'factmatch: cannot create roles here; create factmatch_worker and factmatch_trainer, then migrate again';
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'factmatch_worker') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO factmatch_worker', current_schema());
        GRANT SELECT ON fact_checks, fact_check_embeddings, model_versions, score_thresholds, schema_migrations
            TO factmatch_worker;
        GRANT INSERT, UPDATE, DELETE ON fact_checks, fact_check_embeddings TO factmatch_worker;
        GRANT INSERT ON match_feedback, dead_letter_payloads TO factmatch_worker;
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO factmatch_worker', pg_get_serial_sequence('match_feedback', 'id'));
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'factmatch_trainer') AND current_user <> 'factmatch_trainer' THEN
        EXECUTE format('GRANT %I TO factmatch_trainer', current_user);
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'factmatch: cannot grant to the factmatch roles here; grant them by hand';
END $$;
