-- Lexical retrieval beside the vectors: a generated tsvector over title and claim, with the
-- text search configuration of the fact-check's language ('simple' when unknown), and a GIN
-- index. Dense and lexical candidates are fetched in one round trip and fused in the worker.
CREATE OR REPLACE FUNCTION factmatch_ts_config(lang text) RETURNS regconfig
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (CASE lower(split_part(coalesce(lang, ''), '-', 1))
        WHEN 'ar' THEN 'pg_catalog.arabic'     WHEN 'hy' THEN 'pg_catalog.armenian'
        WHEN 'eu' THEN 'pg_catalog.basque'     WHEN 'ca' THEN 'pg_catalog.catalan'
        WHEN 'da' THEN 'pg_catalog.danish'     WHEN 'nl' THEN 'pg_catalog.dutch'
        WHEN 'en' THEN 'pg_catalog.english'    WHEN 'et' THEN 'pg_catalog.estonian'
        WHEN 'fi' THEN 'pg_catalog.finnish'    WHEN 'fr' THEN 'pg_catalog.french'
        WHEN 'de' THEN 'pg_catalog.german'     WHEN 'el' THEN 'pg_catalog.greek'
        WHEN 'hi' THEN 'pg_catalog.hindi'      WHEN 'hu' THEN 'pg_catalog.hungarian'
        WHEN 'id' THEN 'pg_catalog.indonesian' WHEN 'ga' THEN 'pg_catalog.irish'
        WHEN 'it' THEN 'pg_catalog.italian'    WHEN 'lt' THEN 'pg_catalog.lithuanian'
        WHEN 'ne' THEN 'pg_catalog.nepali'     WHEN 'no' THEN 'pg_catalog.norwegian'
        WHEN 'nb' THEN 'pg_catalog.norwegian'  WHEN 'nn' THEN 'pg_catalog.norwegian'
        WHEN 'pt' THEN 'pg_catalog.portuguese' WHEN 'ro' THEN 'pg_catalog.romanian'
        WHEN 'ru' THEN 'pg_catalog.russian'    WHEN 'sr' THEN 'pg_catalog.serbian'
        WHEN 'es' THEN 'pg_catalog.spanish'    WHEN 'sv' THEN 'pg_catalog.swedish'
        WHEN 'ta' THEN 'pg_catalog.tamil'      WHEN 'tr' THEN 'pg_catalog.turkish'
        WHEN 'yi' THEN 'pg_catalog.yiddish'
        ELSE 'pg_catalog.simple' END)::regconfig
$$;

ALTER TABLE fact_checks ADD COLUMN IF NOT EXISTS search_vector tsvector
    GENERATED ALWAYS AS (to_tsvector(factmatch_ts_config(lang), coalesce(title, '') || ' ' || claim)) STORED;

CREATE INDEX IF NOT EXISTS fact_checks_search_vector ON fact_checks USING gin (search_vector);
