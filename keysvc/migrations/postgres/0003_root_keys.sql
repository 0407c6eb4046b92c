-- Root key check values: per root key id, an HMAC of a fixed label under a key derived from
-- the root key (never the key). keysvc records one when a key id becomes current and, at
-- every start, refuses a loaded key whose bytes do not match what is recorded for its id,
-- or a keyring none of whose keys this database has seen. Not tenant data: no RLS; the
-- runtime role may read and add rows, never change or delete them.
CREATE TABLE root_keys (
    root_key_id TEXT    PRIMARY KEY CHECK (root_key_id <> ''),
    check_value BYTEA   NOT NULL,
    legacy_rows BOOLEAN NOT NULL,
    recorded_at BIGINT  NOT NULL
);

-- The tenant list is tenant data too: under RLS like the other tables, so the runtime role
-- sees a tenant's row only with that tenant set (a statement without a tenant sees none).
-- Listing every tenant (rotate-root) takes the owner's connection: the policy below lets
-- the role that ran this migration (the owner) read every row despite FORCE.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (tenant_id = current_setting('app.current_tenant', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant', true));
CREATE POLICY owner_lists_tenants ON tenants FOR SELECT TO CURRENT_USER USING (true);
