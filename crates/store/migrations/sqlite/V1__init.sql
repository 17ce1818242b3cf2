-- clickward schema, SQLite dialect. Timestamps are UTC microseconds (INTEGER).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('catalog_version', 0);

CREATE TABLE programs (
    id         INTEGER PRIMARY KEY,
    slug       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE affiliates (
    id         INTEGER PRIMARY KEY,
    slug       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE links (
    id           INTEGER PRIMARY KEY,
    code         TEXT NOT NULL UNIQUE,
    program_id   INTEGER NOT NULL REFERENCES programs (id),
    affiliate_id INTEGER REFERENCES affiliates (id),
    destination  TEXT NOT NULL,
    redirect     INTEGER CHECK (redirect IN (302, 307)),
    utm          TEXT NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

-- Any catalogue change bumps catalog_version, so a running server notices
-- changes made by another process (the CLI) and reloads its link cache.
CREATE TRIGGER programs_ai AFTER INSERT ON programs BEGIN UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END;
CREATE TRIGGER programs_au AFTER UPDATE ON programs BEGIN UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END;
CREATE TRIGGER affiliates_ai AFTER INSERT ON affiliates BEGIN UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END;
CREATE TRIGGER affiliates_au AFTER UPDATE ON affiliates BEGIN UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END;
CREATE TRIGGER links_ai AFTER INSERT ON links BEGIN UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END;
CREATE TRIGGER links_au AFTER UPDATE ON links BEGIN UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END;

-- One row per click. click_id is a ULID (16 bytes) whose millisecond equals
-- ts / 1000, so the primary key is also the time index, and new clicks append
-- to the right edge of one B-tree. There is deliberately no index by link: it
-- would dirty one leaf page per distinct link in every group commit (measured:
-- ~2 WAL page writes per click instead of ~0.1). Per-link reads scan the
-- primary key newest first; reports use time ranges.
-- There is no IP column, by design.
CREATE TABLE clicks (
    click_id       BLOB PRIMARY KEY,
    ts             INTEGER NOT NULL,
    link_id        INTEGER NOT NULL,
    program_id     INTEGER NOT NULL,
    affiliate_id   INTEGER,
    src            TEXT,
    sub1           TEXT,
    sub2           TEXT,
    sub3           TEXT,
    sub4           TEXT,
    sub5           TEXT,
    referrer       TEXT,
    device         TEXT NOT NULL,
    os             TEXT,
    browser        TEXT,
    bot_reason     TEXT,
    invalid_reason TEXT,
    country        TEXT,
    region         TEXT,
    city           TEXT,
    visitor_key    BLOB NOT NULL,
    is_unique      INTEGER NOT NULL
) WITHOUT ROWID;

-- Dedup state: the last unique click of a visitor key on a link.
CREATE TABLE visitor_links (
    link_id     INTEGER NOT NULL,
    visitor_key BLOB NOT NULL,
    last_unique INTEGER NOT NULL,
    PRIMARY KEY (link_id, visitor_key)
) WITHOUT ROWID;

CREATE TABLE api_keys (
    id         INTEGER PRIMARY KEY,
    prefix     TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,
    scope      TEXT NOT NULL CHECK (scope IN ('admin', 'read')),
    label      TEXT,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
