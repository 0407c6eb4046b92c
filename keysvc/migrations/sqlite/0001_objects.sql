-- Managed objects of every tenant in one file. SQLite has no row-level security: the store
-- binds tenant_id into every statement (see keysvc/src/store/sqlite.rs).
CREATE TABLE objects (
    tenant_id               TEXT    NOT NULL CHECK (tenant_id <> ''),
    uid                     TEXT    NOT NULL,
    object_type             INTEGER NOT NULL,
    state                   INTEGER NOT NULL,
    cryptographic_algorithm INTEGER,
    cryptographic_length    INTEGER,
    attributes              BLOB    NOT NULL,
    root_key_id             TEXT,
    material                BLOB,
    created_at              INTEGER NOT NULL,
    -- Creation order within the tenant (Locate lists in this order).
    seq                     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, uid),
    UNIQUE (tenant_id, seq),
    -- Wrapped material always names the root key it was wrapped under.
    CHECK ((root_key_id IS NULL) = (material IS NULL))
);

-- Equality pairs Locate can push down (Name, Object Group, custom text attributes).
-- position keeps the record's order, so a record reads back exactly as written.
CREATE TABLE object_index (
    tenant_id TEXT    NOT NULL,
    uid       TEXT    NOT NULL,
    position  INTEGER NOT NULL,
    name      TEXT    NOT NULL,
    value     TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, uid, position),
    FOREIGN KEY (tenant_id, uid) REFERENCES objects (tenant_id, uid)
) WITHOUT ROWID;

CREATE INDEX object_index_lookup ON object_index (tenant_id, name, value);
