-- Dashboard and portal users (issue 6). Passwords are argon2id PHC strings;
-- a user without one signs in by magic link only.
CREATE TABLE users (
    id                      INTEGER PRIMARY KEY,
    username                TEXT NOT NULL UNIQUE,
    role                    TEXT NOT NULL CHECK (role IN ('admin', 'affiliate')),
    affiliate_id            INTEGER REFERENCES affiliates (id),
    password_hash           TEXT,
    credentials_changed_at  INTEGER NOT NULL,
    created_at              INTEGER NOT NULL,
    CHECK ((role = 'affiliate') = (affiliate_id IS NOT NULL))
);
CREATE INDEX payouts_affiliate ON payouts (affiliate_id, id);
CREATE INDEX conversions_affiliate ON conversions (affiliate_id, id);
