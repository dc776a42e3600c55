-- The words read in a fact-check's image (OCR, on its variant-0 row): a post's picture found the
-- same as this one but carrying other words is another claim on a reused picture (a meme
-- template), not a repost (worker/images/words.py). NULL: not read for words (no OCR engine, or
-- kept before this column; read again when its fact-check changes); '': none found.
ALTER TABLE fact_check_images ADD COLUMN IF NOT EXISTS words text;
