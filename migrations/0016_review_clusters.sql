-- Cluster-level review: each review item keeps the claim cluster its post joined (the result's
-- cluster_id), so the queue shows a cluster's open posts as one entry and a moderator's verdict
-- can apply to all of them (each post still gets its own verdict and Feedback record).
ALTER TABLE review_items ADD COLUMN IF NOT EXISTS cluster_id bigint;
CREATE INDEX IF NOT EXISTS review_items_cluster
    ON review_items (cluster_id, tier_rank, probability DESC NULLS LAST, published_at, post_id)
    WHERE status = 'open' AND cluster_id IS NOT NULL;
