-- Record versions (see migrations/postgres/0002_versions.sql): every write increments
-- `version`; an update applies only over the version it was based on. Older rows: 0.
ALTER TABLE objects ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
