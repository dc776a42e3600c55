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

-- When each claim report (trending, emerging) was last published: one worker of the group takes
-- each interval's turn by moving this row forward (worker/storage/trends.py).
CREATE TABLE IF NOT EXISTS claim_reports (
    name          text PRIMARY KEY,
    published_at  timestamptz NOT NULL
);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'factmatch_worker') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON fact_check_hits TO factmatch_worker;
        GRANT SELECT, INSERT, UPDATE ON claim_reports TO factmatch_worker;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'factmatch: cannot grant to the factmatch roles here; grant them by hand';
END $$;
