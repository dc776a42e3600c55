-- A light rewording of a claim answered once too (issue 25): an answer keeps the vector its post
-- was searched with and its context (a digest of everything the answer depends on besides the
-- claim: language, model version, decision model, search settings and quarantine list, both
-- corpus generations), so a later post whose vector is near enough, in the same context, takes
-- its answer without a search. Answers stored before have neither and are only found by key.
ALTER TABLE claim_answers ADD COLUMN IF NOT EXISTS context text;
ALTER TABLE claim_answers ADD COLUMN IF NOT EXISTS vector vector;
-- The near-duplicate search reads one context's answers within the window (no vector index: a
-- context holds one model version's answers of one language and corpus state, within the window).
CREATE INDEX IF NOT EXISTS claim_answers_context ON claim_answers (context, answered_at) WHERE context IS NOT NULL;
