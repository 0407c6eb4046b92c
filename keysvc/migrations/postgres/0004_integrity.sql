-- Authenticated records: `integrity` is an HMAC-SHA-256 (key derived from the tenant KEK)
-- over tenant, uid, object type, version, creation time, the attributes and the wrapped
-- material, prefixed with the id of the root key it was made under. NULL only for rows
-- written before this migration ("legacy" rows), which keysvc reads the old way only under
-- a root key whose authenticated record allows it, and seals on their next write.
ALTER TABLE objects ADD COLUMN integrity BYTEA;

-- Whether legacy rows exist, decided once here (the owner reads past RLS for this one
-- statement) and bound into the root key records keysvc writes at its first start.
CREATE TABLE integrity_upgrade (legacy_rows BOOLEAN NOT NULL);
ALTER TABLE objects NO FORCE ROW LEVEL SECURITY;
INSERT INTO integrity_upgrade SELECT EXISTS (SELECT 1 FROM objects);
ALTER TABLE objects FORCE ROW LEVEL SECURITY;
