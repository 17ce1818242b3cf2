-- Insertion order of clicks, for readers that follow every click as it is
-- written (the NATS stream, click.recorded): a click's ULID is its time at
-- the redirect, and clicks shipped late would sort before ones already read.
-- The writer numbers each batch from MAX(seq); rows from before have none.
ALTER TABLE clicks ADD COLUMN seq INTEGER;
CREATE INDEX clicks_by_seq ON clicks (seq) WHERE seq IS NOT NULL;
