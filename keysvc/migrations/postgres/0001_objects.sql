-- Managed objects of every tenant (or of one tenant, in a dedicated database).
--
-- Isolation: every table holding tenant data has ENABLE and FORCE ROW LEVEL SECURITY with a
-- policy on app.current_tenant, which keysvc sets transaction-locally at the start of every
-- transaction. current_setting(..., true) is NULL when the setting was never made in the
-- session and '' after a transaction that made it ended; neither equals a tenant id (the
-- CHECKs below forbid ''), so a statement run without a tenant sees no rows (fails closed).
-- keysvc connects as a role that owns none of these tables and has no BYPASSRLS; it refuses
-- to start otherwise.

-- Tenant ids that own objects here, for `rotate-root`, which must visit every tenant. No RLS:
-- it holds no key data, and nothing a tenant can send over KMIP reads it (only rotate-root
-- does), so a tenant cannot learn another tenant's id through it.
CREATE TABLE tenants (
    tenant_id TEXT PRIMARY KEY CHECK (tenant_id <> '')
);

CREATE TABLE objects (
    tenant_id               TEXT    NOT NULL CHECK (tenant_id <> ''),
    uid                     TEXT    NOT NULL,
    -- KMIP enumerations are unsigned 32-bit (extensions use 0x8xxxxxxx): BIGINT holds them.
    object_type             BIGINT  NOT NULL,
    state                   BIGINT  NOT NULL,
    cryptographic_algorithm BIGINT,
    cryptographic_length    INTEGER,
    attributes              BYTEA   NOT NULL,
    root_key_id             TEXT,
    material                BYTEA,
    created_at              BIGINT  NOT NULL,
    -- Creation order (Locate lists in this order).
    seq                     BIGSERIAL,
    PRIMARY KEY (tenant_id, uid),
    -- Wrapped material always names the root key it was wrapped under.
    CHECK ((root_key_id IS NULL) = (material IS NULL))
);

CREATE INDEX objects_tenant_seq ON objects (tenant_id, seq);

-- Equality pairs Locate can push down (Name, Object Group, custom text attributes).
-- position keeps the record's order, so a record reads back exactly as written.
CREATE TABLE object_index (
    tenant_id TEXT    NOT NULL CHECK (tenant_id <> ''),
    uid       TEXT    NOT NULL,
    position  INTEGER NOT NULL,
    name      TEXT    NOT NULL,
    value     TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, uid, position),
    FOREIGN KEY (tenant_id, uid) REFERENCES objects (tenant_id, uid)
);

CREATE INDEX object_index_lookup ON object_index (tenant_id, name, value);

ALTER TABLE objects ENABLE ROW LEVEL SECURITY;
ALTER TABLE objects FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON objects
    USING (tenant_id = current_setting('app.current_tenant', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant', true));

ALTER TABLE object_index ENABLE ROW LEVEL SECURITY;
ALTER TABLE object_index FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON object_index
    USING (tenant_id = current_setting('app.current_tenant', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant', true));
