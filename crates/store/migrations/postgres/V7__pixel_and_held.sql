-- The pixel is off unless a program turns it on (docs/postbacks.md, "The
-- pixel"): 'off', 'on' (held for review) or 'signed' (the page carries the
-- merchant's signature). pixel_max_amount: the largest amount a pixel may
-- report, minor units; NULL: no bound.
ALTER TABLE programs ADD COLUMN pixel TEXT NOT NULL DEFAULT 'off';
ALTER TABLE programs ADD COLUMN pixel_max_amount BIGINT;
-- A held conversion is never approved by the hold period: an admin decides.
ALTER TABLE conversions ADD COLUMN held BOOLEAN NOT NULL DEFAULT FALSE;
