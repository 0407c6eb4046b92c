-- Root key check values (see migrations/postgres/0003_root_keys.sql): keysvc refuses to
-- start with a key whose bytes do not match what is recorded for its id.
CREATE TABLE root_keys (
    root_key_id TEXT    PRIMARY KEY,
    check_value BLOB    NOT NULL,
    legacy_rows INTEGER NOT NULL CHECK (legacy_rows IN (0, 1)),
    recorded_at INTEGER NOT NULL
);
