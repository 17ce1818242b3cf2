-- Where a user is told by e-mail (issue 14): the address, and whether an
-- affiliate's user wants a mail for each new conversion (opt-in).
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN notify_conversions INTEGER NOT NULL DEFAULT 0;
