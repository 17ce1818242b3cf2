-- Who owns an item (README, "Who owns an item"): the digest of the catalogue
-- entry last applied to it, or NULL when it was made or changed through the
-- API, CLI or dashboard. Items that exist before this migration count as the
-- file's, with an unknown digest ('\x00'), so the file applies to them once.
ALTER TABLE programs ADD COLUMN catalog_digest BYTEA;
ALTER TABLE affiliates ADD COLUMN catalog_digest BYTEA;
ALTER TABLE links ADD COLUMN catalog_digest BYTEA;
UPDATE programs SET catalog_digest = '\x00';
UPDATE affiliates SET catalog_digest = '\x00';
UPDATE links SET catalog_digest = '\x00';
