-- The moderators' console: what they review, who they are, what they decided.
--
-- review_items: one row per post whose result had a tiered match, written by the console's own
-- consumer of the matches topic (idempotent: a redelivered result rewrites the same row; a
-- decided item is never reopened by one). A claim is a short lease held by one browser session.
CREATE TABLE IF NOT EXISTS review_items (
    post_id             text PRIMARY KEY,
    result              jsonb NOT NULL,
    text                text,
    lang                text,
    platform            text,
    model_version       text NOT NULL,
    tier_rank           smallint NOT NULL,          -- 0: a match, 1: a suggestion at best
    probability         double precision,           -- the best match's
    fact_check_ids      text[] NOT NULL,
    published_at        timestamptz NOT NULL,       -- the result's processed_at
    received_at         timestamptz NOT NULL DEFAULT now(),
    status              text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done')),
    claimed_by          text,
    claim_session       text,
    claimed_until       timestamptz,
    decided_at          timestamptz,
    decided_by          text
);
-- The queue's order: what needs a human first (a match before a suggestion, the surer first,
-- the older first).
CREATE INDEX IF NOT EXISTS review_items_queue
    ON review_items (tier_rank, probability DESC NULLS LAST, published_at, post_id) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS review_items_fact_checks ON review_items USING gin (fact_check_ids) WHERE status = 'open';

CREATE TABLE IF NOT EXISTS console_users (
    name                text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._@-]{1,64}$'),
    password_hash       text,                       -- NULL: identity from a trusted proxy only
    role                text NOT NULL CHECK (role IN ('moderator', 'admin')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    disabled            boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS console_sessions (
    token_sha256        text PRIMARY KEY,           -- the cookie holds the token; only its hash is kept
    user_name           text NOT NULL REFERENCES console_users (name) ON DELETE CASCADE,
    csrf                text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    last_seen           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS console_sessions_user ON console_sessions (user_name);

-- Verdicts wait here for the undo window, then a sender publishes each as one Feedback record
-- (an outbox: a console restart loses none, and an undone verdict is never published).
CREATE TABLE IF NOT EXISTS console_verdicts (
    id                  bigserial PRIMARY KEY,
    post_id             text NOT NULL REFERENCES review_items (post_id) ON DELETE CASCADE,
    fact_check_id       text NOT NULL,
    verdict             text NOT NULL CHECK (verdict IN ('confirm', 'reject')),
    feedback            jsonb NOT NULL,             -- the Feedback record, as it will be published
    user_name           text NOT NULL,
    session_id          text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    send_after          timestamptz NOT NULL,
    state               text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'undone')),
    sent_at             timestamptz
);
CREATE INDEX IF NOT EXISTS console_verdicts_due ON console_verdicts (send_after) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS console_verdicts_post ON console_verdicts (post_id);

-- Who did what, when, from which session: every verdict, undo, claim, login and admin action.
CREATE TABLE IF NOT EXISTS console_audit (
    id                  bigserial PRIMARY KEY,
    at                  timestamptz NOT NULL DEFAULT now(),
    user_name           text NOT NULL,
    session_id          text,
    action              text NOT NULL,
    post_id             text,
    fact_check_id       text,
    verdict             text,
    note                text,
    detail              jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS console_audit_post ON console_audit (post_id);
