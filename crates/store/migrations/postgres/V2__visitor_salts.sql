-- The visitor-key salt of each UTC day, shared by every node: a visitor's
-- key must be the same whichever node takes the click, or a double tap
-- across nodes would count twice. The first node to offer a day's salt
-- wins; days no dedup window reaches are deleted, so old keys cannot be
-- recomputed (the same rule as the single node's salt file).
CREATE TABLE visitor_salts (
    day  BIGINT PRIMARY KEY,
    salt BYTEA NOT NULL
);
