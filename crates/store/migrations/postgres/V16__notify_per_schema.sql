-- NOTIFY channels are one namespace per database: outside `public`, a
-- schema's catalogue changes go to its own channel (the same name the store
-- computes at connect, `PgStore::channels`), so two installations in one
-- database do not hear each other.
CREATE OR REPLACE FUNCTION clickward_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE v BIGINT;
BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'catalog_version' RETURNING value INTO v;
    PERFORM pg_notify('clickward_catalog' || clickward_channel_suffix(TG_TABLE_SCHEMA), v::text);
    RETURN NULL;
END $$;

-- '' in public (the documented names), else '_' and 12 hex digits of the
-- schema name's MD5.
CREATE OR REPLACE FUNCTION clickward_channel_suffix(schema_name TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN schema_name = 'public' THEN '' ELSE '_' || left(md5(schema_name), 12) END
$$;
