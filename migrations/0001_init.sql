-- factmatch schema, version 1: the fact-check corpus, the model registry, and one
-- embeddings table keyed by (model_version, fact_check_id). Vectors of any dimension share
-- the table; each model version gets its own partial HNSW index over a cast of the column
-- to its dimension (halfvec above 2,000 dimensions), built when the version is indexed.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE IF NOT EXISTS fact_checks (
    id            text PRIMARY KEY,
    claim         text NOT NULL CHECK (length(btrim(claim)) > 0),
    title         text,
    url           text,
    lang          text,
    rating        text,
    published_at  timestamptz,
    source        text,
    meta          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS model_versions (
    version       text PRIMARY KEY,
    path          text NOT NULL,
    dimension     integer NOT NULL CHECK (dimension > 0 AND dimension <= 16000),
    status        text NOT NULL CHECK (status IN ('candidate', 'indexing', 'ready', 'active', 'retired', 'rejected')),
    base          text,
    metrics       jsonb NOT NULL DEFAULT '{}'::jsonb,
    notes         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    indexed_at    timestamptz,
    activated_at  timestamptz
);

-- At most one active version, enforced by the database rather than by convention.
CREATE UNIQUE INDEX IF NOT EXISTS model_versions_one_active
    ON model_versions ((true)) WHERE status = 'active';

CREATE TABLE IF NOT EXISTS fact_check_embeddings (
    model_version  text NOT NULL REFERENCES model_versions (version) ON DELETE CASCADE,
    fact_check_id  text NOT NULL REFERENCES fact_checks (id) ON DELETE CASCADE,
    embedding      vector NOT NULL,
    embedded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_version, fact_check_id)
);

CREATE INDEX IF NOT EXISTS fact_check_embeddings_fact_check_id
    ON fact_check_embeddings (fact_check_id);
