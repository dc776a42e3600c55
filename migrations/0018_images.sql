-- Images of fact-checks, matched by PDQ perceptual hash (worker/storage/images.py). A hash does
-- not depend on a model version: one row per image of a fact-check, replaced with the fact-check.
CREATE TABLE IF NOT EXISTS fact_check_images (
    fact_check_id  text NOT NULL REFERENCES fact_checks (id) ON DELETE CASCADE,
    idx            int NOT NULL,
    -- 0: the image as given; 1-7: its other rotations and mirror images (PDQ's dihedral hashes),
    -- so a mirrored or rotated repost is the same picture.
    variant        smallint NOT NULL DEFAULT 0,
    url            text,
    sha256         text,
    -- NULL when the image could not be read (error says why) or its hash is too flat to match.
    hash           bit(256),
    quality        int,
    error          text,
    read_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (fact_check_id, idx, variant)
);
-- Nearest hashes by Hamming distance (pgvector's HNSW over bit).
CREATE INDEX IF NOT EXISTS fact_check_images_hash ON fact_check_images USING hnsw (hash bit_hamming_ops);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'factmatch_worker') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON fact_check_images TO factmatch_worker;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'factmatch: cannot grant to the factmatch roles here; grant them by hand';
END $$;
