-- Claim clusters: every answered post joins the cluster of the claim it makes (worker/storage/clusters.py).
-- A cluster belongs to one model version (its centroid lives in that version's vector space);
-- each version's centroids get a partial HNSW index when the version is indexed.
CREATE TABLE IF NOT EXISTS claim_clusters (
    id                      bigserial PRIMARY KEY,
    model_version           text NOT NULL REFERENCES model_versions (version) ON DELETE CASCADE,
    -- The normalised mean of its posts' vectors; NULL for a cluster of repeats whose origin was forgotten.
    centroid                vector,
    size                    bigint NOT NULL DEFAULT 0,
    -- When its posts were posted (their created_at, else when they were answered).
    first_seen              timestamptz NOT NULL,
    last_seen               timestamptz NOT NULL,
    -- Posts per language and per platform.
    langs                   jsonb NOT NULL DEFAULT '{}'::jsonb,
    platforms               jsonb NOT NULL DEFAULT '{}'::jsonb,
    representative_post_id  text NOT NULL,
    representative_text     text NOT NULL,
    -- The best-matching fact-check of its posts (highest probability seen) and that probability.
    fact_check_id           text,
    best_probability        real,
    -- Posts the worker abstained on (no fact-check reached a tier).
    abstained               bigint NOT NULL DEFAULT 0,
    created_at              timestamptz NOT NULL DEFAULT now(),
    -- When a post last joined it: a cluster is joinable for cluster_window_s after this.
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS claim_clusters_version_updated ON claim_clusters (model_version, updated_at);
CREATE INDEX IF NOT EXISTS claim_clusters_fact_check ON claim_clusters (fact_check_id) WHERE fact_check_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS post_clusters (
    model_version  text NOT NULL,
    post_id        text NOT NULL,
    cluster_id     bigint NOT NULL REFERENCES claim_clusters (id) ON DELETE CASCADE,
    assigned_at    timestamptz NOT NULL DEFAULT now(),
    -- The post as the emerging claims show it: when it was posted, its claim text, and whether
    -- the worker abstained on it (no fact-check reached a tier).
    seen_at        timestamptz NOT NULL,
    text           text NOT NULL,
    abstained      boolean NOT NULL,
    PRIMARY KEY (model_version, post_id)
);
CREATE INDEX IF NOT EXISTS post_clusters_cluster ON post_clusters (cluster_id, seen_at);
-- The emerging claims: clusters no post of which matched a fact-check, by when a post last joined.
CREATE INDEX IF NOT EXISTS claim_clusters_unmatched ON claim_clusters (model_version, updated_at)
    WHERE fact_check_id IS NULL;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'factmatch_worker') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON claim_clusters, post_clusters TO factmatch_worker;
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO factmatch_worker', pg_get_serial_sequence('claim_clusters', 'id'));
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'factmatch: cannot grant to the factmatch roles here; grant them by hand';
END $$;

-- Versions indexed before this migration get their centroid index here; later ones when indexed.
DO $$
DECLARE
    v record;
    t text;
BEGIN
    FOR v IN SELECT version, dimension FROM model_versions WHERE indexed_at IS NOT NULL LOOP
        t := CASE WHEN v.dimension <= 2000 THEN 'vector' ELSE 'halfvec' END;
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON claim_clusters USING hnsw ((centroid::%s(%s)) %s_cosine_ops)'
            ' WHERE model_version = %L',
            'ccl_hnsw_' || left(encode(sha1(convert_to(v.version, 'UTF8')), 'hex'), 16), t, v.dimension, t, v.version);
    END LOOP;
END $$;
