-- Fact-check images' ORB keypoints (worker/images/keypoints.py): a cropped repost is found by
-- its keypoints where its PDQ hash is too far. Replaced with the fact-check's images.
CREATE TABLE IF NOT EXISTS fact_check_image_points (
    fact_check_id  text NOT NULL REFERENCES fact_checks (id) ON DELETE CASCADE,
    idx            int NOT NULL,
    n              int NOT NULL,
    descriptor     bit(256) NOT NULL,
    -- Where the keypoint is, as shares of the image's longer side.
    x              real NOT NULL,
    y              real NOT NULL,
    PRIMARY KEY (fact_check_id, idx, n)
);
CREATE INDEX IF NOT EXISTS fact_check_image_points_descriptor
    ON fact_check_image_points USING hnsw (descriptor bit_hamming_ops);

-- How many keypoints an image kept (on its variant-0 row); NULL: read before keypoints existed,
-- so the next corpus load reads it again.
ALTER TABLE fact_check_images ADD COLUMN IF NOT EXISTS keypoints int;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'factmatch_worker') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON fact_check_image_points TO factmatch_worker;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'factmatch: cannot grant to the factmatch roles here; grant them by hand';
END $$;
