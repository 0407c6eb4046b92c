-- Record versions: every write increments `version`, and an update applies only over the
-- version it was based on, so a write from a stale read fails instead of silently undoing a
-- change committed in between (a Destroy, a compromise Revoke). Rows written before this
-- migration have version 0.
ALTER TABLE objects ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
