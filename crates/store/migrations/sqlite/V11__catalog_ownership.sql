-- Who owns an item (README, "Who owns an item"): the digest of the catalogue
-- entry last applied to it, or NULL when it was made or changed through the
-- API, CLI or dashboard. Items that exist before this migration count as the
-- file's, with an unknown digest (X'00'), so the file applies to them once.
ALTER TABLE programs ADD COLUMN catalog_digest BLOB;
ALTER TABLE affiliates ADD COLUMN catalog_digest BLOB;
ALTER TABLE links ADD COLUMN catalog_digest BLOB;
UPDATE programs SET catalog_digest = X'00';
UPDATE affiliates SET catalog_digest = X'00';
UPDATE links SET catalog_digest = X'00';
