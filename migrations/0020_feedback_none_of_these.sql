-- A verdict given as "none of these" (every match the post was shown rejected): calibration
-- counts such a post as one with nothing to find, the open-set negative it otherwise lacks.
ALTER TABLE match_feedback ADD COLUMN IF NOT EXISTS none_of_these boolean NOT NULL DEFAULT false;
