-- Authenticated records (see migrations/postgres/0004_integrity.sql).
ALTER TABLE objects ADD COLUMN integrity BLOB;
CREATE TABLE integrity_upgrade (legacy_rows INTEGER NOT NULL);
INSERT INTO integrity_upgrade SELECT EXISTS (SELECT 1 FROM objects);
