//! Root key rotation: rewraps every stored object under the keyring's current root key.
//!
//! ```text
//! for each tenant (store.tenants()):
//!     page of ≤ ROTATE_BATCH uids (creation order) ─► one transaction in the tenant's scope:
//!         get, row locked ─► unwrap (any loaded root key) ─► wrap (current)
//!         ─► update (over the version read) ─► commit
//! ```
//!
//! Small transactions keep row locks short, so rotation runs while keysvc serves; objects
//! already under the current key are skipped, so an interrupted run is simply re-run.

use crate::engine::KeyObject;
use crate::envelope::Keyring;
use crate::store::{LocateFilter, Store, StoreError};
use crate::tenant::{TenantContext, TenantId};

/// Objects rewrapped per transaction: large enough that commits do not dominate, small
/// enough that a transaction holds its row locks for well under a second.
pub const ROTATE_BATCH: usize = 500;

/// What a rotation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotateReport {
    pub tenants: usize,
    /// Objects visited.
    pub objects: usize,
    /// Objects rewrapped under the current root key.
    pub rewrapped: usize,
    /// Objects already under the current root key.
    pub already_current: usize,
    /// Destroyed objects: metadata only, nothing to rewrap.
    pub without_material: usize,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The keyring does not match the database's root key records.
    #[error("{0}")]
    RootKey(String),
    /// The object's material does not unwrap with any loaded root key (the old key is
    /// missing from the keyring, or the row is damaged). Nothing of its batch was written.
    #[error("tenant {tenant}, object {uid}: {reason}")]
    Unreadable {
        tenant: TenantId,
        uid: String,
        reason: String,
    },
}

/// Rewraps every object of every tenant under `keyring`'s current root key. The keyring
/// must also hold the root keys objects are wrapped under now (as previous keys).
pub async fn rotate_root(
    store: &dyn Store,
    keyring: &Keyring,
) -> Result<RotateReport, RotateError> {
    // A wrong key under a known id is refused before anything is rewritten, and the new
    // key's check value is recorded as it becomes current.
    crate::server::verify_root_keys(store, keyring)
        .await
        .map_err(|e| RotateError::RootKey(e.to_string()))?;
    let mut report = RotateReport::default();
    for tenant in store.tenants().await? {
        report.tenants += 1;
        rotate_tenant(store, keyring, &tenant, &mut report).await?;
        tracing::info!(%tenant, objects = report.objects, rewrapped = report.rewrapped, "tenant rotated");
    }
    Ok(report)
}

async fn rotate_tenant(
    store: &dyn Store,
    keyring: &Keyring,
    tenant: &TenantId,
    report: &mut RotateReport,
) -> Result<(), RotateError> {
    let mut ctx = TenantContext::new(tenant.clone());
    ctx.client_identity = "openkcm keysvc rotate-root".into();
    ctx.request_id = format!("rotate-root-{}", uuid::Uuid::new_v4());
    let mut offset = 0;
    loop {
        let mut tx = store.begin(&ctx).await?;
        let page = tx
            .locate(&LocateFilter {
                offset,
                limit: Some(ROTATE_BATCH),
                ..LocateFilter::default()
            })
            .await?;
        for uid in &page {
            report.objects += 1;
            // Locked until the batch commits, so a Destroy or Revoke committed by a replica
            // meanwhile is either seen here or waits for this batch: never undone by it.
            // Gone since the page was listed: nothing to rewrap.
            let Some(record) = tx.get_for_update(uid).await? else {
                continue;
            };
            // Sealed (authenticator) under the current key too, or rewritten: a row that
            // predates authenticated records is sealed here, and a destroyed object's
            // authenticator moves to the new key with everything else.
            let sealed_current = record
                .integrity
                .as_deref()
                .and_then(crate::envelope::integrity_key_id)
                == Some(keyring.current_id());
            match &record.material {
                None => {
                    report.without_material += 1;
                    if sealed_current {
                        continue;
                    }
                }
                Some(w) if w.root_key_id == keyring.current_id() && sealed_current => {
                    report.already_current += 1;
                    continue;
                }
                Some(_) => {}
            }
            let destroyed = record.material.is_none();
            let object = KeyObject::from_record(record, keyring, tenant).map_err(|e| {
                RotateError::Unreadable {
                    tenant: tenant.clone(),
                    uid: uid.clone(),
                    reason: e.message,
                }
            })?;
            tx.update(&object.to_record(keyring, tenant)).await?;
            if !destroyed {
                report.rewrapped += 1;
            }
        }
        tx.commit().await?;
        if page.len() < ROTATE_BATCH {
            return Ok(());
        }
        offset += page.len();
    }
}
