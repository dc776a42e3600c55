-- Trending fact-checks: posts per fact-check, hour, language and platform, counted once per post
-- (in the transaction that puts the post in its claim cluster, so a redelivered post adds nothing).
-- A post counts for its rank-1 tiered match; the hour is the post's created_at (else when it was answered).
CREATE TABLE IF NOT EXISTS fact_check_hits (
    fact_check_id  text NOT NULL,
    hour           timestamptz NOT NULL,
    lang           text NOT NULL,
    platform       text NOT NULL,
    posts          bigint NOT NULL,
    PRIMARY KEY (fact_check_id, hour, lang, platform)
);
CREATE INDEX IF NOT EXISTS fact_check_hits_hour ON fact_check_hits (hour);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'factmatch_worker') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON fact_check_hits TO factmatch_worker;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'factmatch: cannot grant to the factmatch roles here; grant them by hand';
END $$;
