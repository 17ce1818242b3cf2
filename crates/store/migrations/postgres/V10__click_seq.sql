-- Insertion order of clicks, for readers that follow every click as it is
-- written (the NATS stream, click.recorded): a click's ULID is its time at
-- the redirect, and clicks shipped late from a node's spool would sort
-- before ones already read. Allocated at insert, so with several shippers a
-- lower seq can commit after a higher one (readers allow for it).
CREATE SEQUENCE click_seq;
ALTER TABLE clicks ADD COLUMN seq BIGINT;
ALTER TABLE clicks ALTER COLUMN seq SET DEFAULT nextval('click_seq');
CREATE INDEX clicks_by_seq ON clicks (seq) WHERE seq IS NOT NULL;
