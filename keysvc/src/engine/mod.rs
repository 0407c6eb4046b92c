//! The KMIP engine: executes one decoded request for one tenant.
//!
//! ```text
//! handle(ctx, bytes) ─► decode ─► for each batch item, in order:
//!                                   payload ─► ops::* ─► Ok(response payload) | Err(OpError)
//!                                   (ID placeholder carried between items)
//!                     ◄─ encode ◄─ commit the request's transaction (only then answer)
//! ```
//!
//! Every failure becomes an [`OpError`] with a Result Reason; which reason each error gets,
//! and how reasons are adapted to the client's protocol version ([`OpError::for_version`]),
//! is decided in one file, `errors.rs`. A missing object and another tenant's object produce
//! the identical error.

mod attributes;
mod errors;
mod keypairs;
mod lifecycle;
mod maintained;
mod object;
mod services;

use std::sync::Arc;

use kmip::contract::header_version;
use kmip::message::{
    DateTime, RequestMessage, RequestPayload, ResponseBatchItem, ResponseHeader, ResponseMessage,
    ResponsePayload, TtlvValue, UniqueIdentifier,
};
use kmip::spec::{BatchErrorContinuationOption, ObjectType, Operation, ResultReason, ResultStatus};
use kmip::ttlv::{self, Limits};
use kmip::{ProtocolVersion, Tag};

use crate::cache::{CacheConfig, ObjectCache};
use crate::envelope::Keyring;
use crate::store::{Store, Transaction};
use crate::tenant::TenantContext;

pub use errors::OpError;
pub use object::{integrity_failures, KeyObject};

/// Most random bytes one RNG Retrieve may ask for: enough for any key or nonce, small
/// enough that a request cannot make the server produce megabytes.
pub const MAX_RNG_BYTES: i32 = 4096;

/// What one request may make the server do: each bound is far above what any real client
/// sends, and each stops a request that would make a replica allocate gigabytes (one
/// request must never take a replica down for every tenant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Most batch items in one request.
    pub max_batch_items: usize,
    /// Largest object Register accepts, as encoded (key block, opaque data).
    pub max_object_size: usize,
    /// Largest response the server builds, whatever the client's Maximum Response Size:
    /// items are measured as they execute, and the items past it answer Response Too
    /// Large without being executed. The default equals the request limit, which KMIP
    /// clients commonly also apply to what they read.
    pub max_response_size: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            max_batch_items: 256,
            max_object_size: 256 * 1024,
            max_response_size: 1024 * 1024,
        }
    }
}

/// Engine settings that do not change per request.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Limits applied when decoding requests.
    pub limits: Limits,
    /// Vendor Identification answered to Query.
    pub vendor: String,
    /// Answer the Interop operation (interoperability test cases mark their start and end
    /// with it). Off by default and never on in production: KMIP 2.1 §6.1.26 "SHALL NOT be
    /// available in a production server"; off, Interop is Operation Not Supported.
    pub interop: bool,
    /// Bounds of the key cache.
    pub cache: CacheConfig,
    /// Bounds of one request.
    pub caps: Caps,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            vendor: format!("OpenKCM {}", env!("CARGO_PKG_VERSION")),
            interop: false,
            cache: CacheConfig::default(),
            caps: Caps::default(),
        }
    }
}

/// What happened to one batch item, for metrics and audit.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemOutcome {
    pub operation: Option<Operation>,
    pub reason: Option<ResultReason>,
}

/// The engine. Stateless between requests apart from the key cache; cheap to share.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    cache: Arc<ObjectCache<KeyObject>>,
    config: Arc<EngineConfig>,
}

impl Engine {
    /// The engine and its key cache (bounded by `config.cache`), which follows the store's
    /// change notifications from here on: one follower task per engine.
    pub fn new(store: Arc<dyn Store>, keyring: Arc<Keyring>, config: EngineConfig) -> Self {
        let cache = Arc::new(ObjectCache::new(config.cache));
        cache.follow(store.subscribe());
        Self {
            store,
            keyring,
            cache,
            config: Arc::new(config),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn cache(&self) -> &ObjectCache<KeyObject> {
        &self.cache
    }

    /// Executes a TTLV request and returns the TTLV response. Never fails: malformed input
    /// gets a KMIP error response.
    pub async fn handle(&self, ctx: &TenantContext, request: &[u8]) -> (Vec<u8>, Vec<ItemOutcome>) {
        let item = match ttlv::decode(request, &self.config.limits) {
            Ok(item) => item,
            Err(e) => return refuse(ProtocolVersion::V1_0, &format!("malformed TTLV: {e}")),
        };
        let message = match RequestMessage::from_item(&item) {
            Ok(m) => m,
            Err(e) => return refuse(header_version(&item), &format!("malformed request: {e}")),
        };
        let response = self.execute(ctx, message).await;
        let outcomes = response
            .batch_items
            .iter()
            .map(|b| ItemOutcome {
                operation: b.operation.and_then(Operation::from_value),
                reason: b.result_reason,
            })
            .collect();
        (response.to_ttlv(), outcomes)
    }

    /// Executes a decoded request.
    pub async fn execute(&self, ctx: &TenantContext, message: RequestMessage) -> ResponseMessage {
        let requested = message.version();
        // Answer in the newest version we share with the client.
        let version = if requested.is_supported() {
            requested
        } else {
            ProtocolVersion::SUPPORTED
                .into_iter()
                .find(|v| v.major == requested.major && *v < requested)
                .unwrap_or(ProtocolVersion::V1_0)
        };
        let continuation = message
            .header
            .batch_error_continuation_option
            .unwrap_or(BatchErrorContinuationOption::Stop);

        let mut req = Request {
            engine: self,
            ctx,
            version,
            tx: None,
            wrote: false,
            writes: 0,
            placeholder: None,
        };
        let caps = self.config.caps;
        if message.batch_items.len() > caps.max_batch_items {
            let e = OpError::new(
                ResultReason::InvalidMessage,
                format!(
                    "a batch of {} items exceeds this server's limit of {}",
                    message.batch_items.len(),
                    caps.max_batch_items
                ),
            );
            audit_refusal(ctx, None, &e);
            let mut response = ResponseMessage::new(
                version,
                vec![ResponseBatchItem::failure(None, e.reason, e.message)],
            );
            response.header.client_correlation_value =
                message.header.client_correlation_value.clone();
            return response;
        }
        // The response is measured as items execute: past the budget, items are answered
        // Response Too Large and not executed, so no request makes the server build (or
        // hold) more than the budget.
        let budget = match message.header.maximum_response_size {
            Some(max) if max >= 0 => (max as usize).min(caps.max_response_size),
            _ => caps.max_response_size,
        };
        let mut used = RESPONSE_HEADER_ALLOWANCE;
        let mut over_budget = false;
        // The item that crossed the budget wrote: nothing of the request may be kept (its
        // change cannot be separated from the earlier items').
        let mut discard_writes = false;

        let mut items: Vec<ResponseBatchItem> = Vec::with_capacity(message.batch_items.len());
        let mut failed = false;
        for (n, batch_item) in message.batch_items.iter().enumerate() {
            // Room kept for answering every later item Response Too Large.
            let reserve = (message.batch_items.len() - n - 1) * TOO_LARGE_ITEM_LEN;
            if failed && continuation != BatchErrorContinuationOption::Continue {
                break;
            }
            let writes_before = req.writes;
            let result = if over_budget {
                Err(too_large(budget))
            } else {
                match &batch_item.payload {
                    Ok(payload) => req.run(payload).await,
                    Err(untyped) => Err(OpError::malformed(&untyped.error)),
                }
            };
            let mut out = item_response(ctx, batch_item, result, version, &mut failed);
            let size = out.encode(version).encoded_len();
            if !over_budget && used + size + reserve > budget {
                over_budget = true;
                // This item's own change must not be kept when its answer is a failure.
                discard_writes = req.writes != writes_before;
                out = item_response(
                    ctx,
                    batch_item,
                    Err(too_large(budget)),
                    version,
                    &mut failed,
                );
            }
            used += size.min(budget);
            items.push(out);
        }

        if discard_writes {
            drop(req.tx.take());
            for item in &mut items {
                if item.result_status == ResultStatus::Success {
                    *item = ResponseBatchItem {
                        operation: item.operation,
                        unique_batch_item_id: item.unique_batch_item_id.clone(),
                        ..ResponseBatchItem::failure(
                            item.operation,
                            ResultReason::ResponseTooLarge,
                            format!("not applied: the response would exceed {budget} bytes"),
                        )
                    };
                }
            }
        }

        if failed && continuation == BatchErrorContinuationOption::Undo {
            // Nothing of this request is kept: roll back and say so for each success, whose
            // response is otherwise "returned normally" (KMIP 2.1 §11.5, Undo).
            drop(req.tx.take());
            for item in &mut items {
                if item.result_status == ResultStatus::Success {
                    item.result_status = ResultStatus::OperationUndone;
                }
            }
        } else if let Some(tx) = req.tx.take() {
            // Acknowledge nothing that is not durable.
            if let Err(e) = tx.commit().await {
                let e = OpError::from(e);
                for item in &mut items {
                    *item = ResponseBatchItem {
                        operation: item.operation,
                        unique_batch_item_id: item.unique_batch_item_id.clone(),
                        ..ResponseBatchItem::failure(
                            item.operation,
                            e.for_version(version),
                            e.message.clone(),
                        )
                    };
                }
            }
        }

        let mut header = ResponseHeader::new(version, DateTime::now(), items.len() as i32);
        header.client_correlation_value = message.header.client_correlation_value.clone();
        header.server_correlation_value = message.header.server_correlation_value.clone();
        let mut response = ResponseMessage {
            header,
            batch_items: items,
        };
        if let Some(max) = message.header.maximum_response_size {
            let size = response.to_item().encoded_len();
            if max >= 0 && size > max as usize {
                for item in &mut response.batch_items {
                    *item = ResponseBatchItem {
                        operation: item.operation,
                        unique_batch_item_id: item.unique_batch_item_id.clone(),
                        ..ResponseBatchItem::failure(
                            item.operation,
                            ResultReason::ResponseTooLarge,
                            format!("response of {size} bytes exceeds Maximum Response Size {max}"),
                        )
                    };
                }
            }
        }
        response
    }
}

/// Room left in the budget for the response header, which is measured with the whole
/// response at the end.
const RESPONSE_HEADER_ALLOWANCE: usize = 256;

/// At least the encoded size of one item answered [`too_large`] (operation, status,
/// reason, the message, an 8-byte batch item id).
const TOO_LARGE_ITEM_LEN: usize = 192;

fn too_large(budget: usize) -> OpError {
    OpError::new(
        ResultReason::ResponseTooLarge,
        format!("the response would exceed {budget} bytes; send fewer or smaller items"),
    )
}

/// One batch item's answer (failures audited; `failed` set on a failure).
fn item_response(
    ctx: &TenantContext,
    batch_item: &kmip::message::RequestBatchItem,
    result: Result<ResponsePayload, OpError>,
    version: ProtocolVersion,
    failed: &mut bool,
) -> ResponseBatchItem {
    let mut out = match result {
        Ok(payload) => ResponseBatchItem::success(payload),
        Err(e) => {
            *failed = true;
            audit_refusal(ctx, batch_item.operation(), &e);
            ResponseBatchItem::failure(
                Some(batch_item.operation),
                e.for_version(version),
                e.message,
            )
        }
    };
    out.operation = Some(batch_item.operation);
    out.unique_batch_item_id = batch_item.unique_batch_item_id.clone();
    out
}

/// A whole-message refusal: one failed batch item, Invalid Message.
fn refuse(version: ProtocolVersion, message: &str) -> (Vec<u8>, Vec<ItemOutcome>) {
    tracing::info!(target: "audit", event = "refused", reason = "InvalidMessage", message);
    let response = ResponseMessage::new(
        version,
        vec![ResponseBatchItem::failure(
            None,
            ResultReason::InvalidMessage,
            message,
        )],
    );
    let outcome = ItemOutcome {
        operation: None,
        reason: Some(ResultReason::InvalidMessage),
    };
    (response.to_ttlv(), vec![outcome])
}

fn audit_refusal(ctx: &TenantContext, operation: Option<Operation>, e: &OpError) {
    tracing::info!(
        target: "audit",
        event = "refused",
        tenant = %ctx.tenant,
        client = %ctx.client_identity,
        request_id = %ctx.request_id,
        operation = ?operation,
        reason = ?e.reason,
        message = %e.message,
    );
}

/// The state of one request: its transaction (opened on first use, so requests served from
/// the cache never touch the database) and the ID placeholder.
struct Request<'e> {
    engine: &'e Engine,
    ctx: &'e TenantContext,
    version: ProtocolVersion,
    tx: Option<Box<dyn Transaction>>,
    /// The transaction holds changes not yet committed (and perhaps never: Undo, a failed
    /// commit), so reads go to it and nothing read is cached.
    wrote: bool,
    /// Writes made so far (which item wrote, for the response budget).
    writes: u32,
    placeholder: Option<String>,
}

/// The operations [`Request::run`] executes, which Query Operations lists (filtered to those the
/// request's version defines): kept beside the dispatcher so the two are changed together, and
/// `tests::query_lists_exactly_what_is_served` sends every KMIP operation to check they agree.
/// Interop is served (and listed) only when [`EngineConfig::interop`] is on.
const OPERATIONS: [Operation; 26] = [
    Operation::DiscoverVersions,
    Operation::Query,
    Operation::Create,
    Operation::CreateKeyPair,
    Operation::Register,
    Operation::Get,
    Operation::GetAttributes,
    Operation::GetAttributeList,
    Operation::AddAttribute,
    Operation::ModifyAttribute,
    Operation::DeleteAttribute,
    Operation::SetAttribute,
    Operation::Locate,
    Operation::Activate,
    Operation::Revoke,
    Operation::Destroy,
    Operation::Encrypt,
    Operation::Decrypt,
    Operation::Mac,
    Operation::Sign,
    Operation::SignatureVerify,
    Operation::ReKey,
    Operation::ReKeyKeyPair,
    Operation::RngRetrieve,
    Operation::Check,
    Operation::Log,
];

/// The object types this server keeps: the ones Register accepts (Create makes Symmetric Keys,
/// Create Key Pair public and private keys), which Query Objects lists.
const OBJECT_TYPES: [ObjectType; 6] = [
    ObjectType::SymmetricKey,
    ObjectType::PublicKey,
    ObjectType::PrivateKey,
    ObjectType::SecretData,
    ObjectType::Certificate,
    ObjectType::OpaqueObject,
];

impl Engine {
    /// The operations served to a request of version `v`, for Query: those of [`OPERATIONS`]
    /// (and Interop when configured) that `v` defines. The dispatcher itself does not refuse
    /// an operation sent under an older version header than defines it.
    fn served_operations(&self, v: ProtocolVersion) -> Vec<Operation> {
        let interop = self.config.interop.then_some(Operation::Interop);
        OPERATIONS
            .into_iter()
            .chain(interop)
            .filter(|o| o.is_defined_in(v))
            .collect()
    }

    /// Whether objects of type `t` are kept (Register refuses the others).
    fn serves_object_type(t: ObjectType) -> bool {
        OBJECT_TYPES.contains(&t)
    }

    /// The object types served to a request of version `v`, for Query.
    fn served_object_types(v: ProtocolVersion) -> Vec<ObjectType> {
        OBJECT_TYPES
            .into_iter()
            .filter(|t| t.is_defined_in(v))
            .collect()
    }
}

impl Request<'_> {
    async fn run(&mut self, payload: &RequestPayload) -> Result<ResponsePayload, OpError> {
        use RequestPayload as P;
        match payload {
            P::DiscoverVersions(r) => Ok(services::discover_versions(r)),
            P::Query(r) => Ok(services::query(self, r)),
            P::Create(r) => lifecycle::create(self, r).await,
            P::CreateKeyPair(r) => keypairs::create_key_pair(self, r).await,
            P::Register(r) => lifecycle::register(self, r).await,
            P::Get(r) => lifecycle::get(self, r).await,
            P::Activate(r) => lifecycle::activate(self, r).await,
            P::Revoke(r) => lifecycle::revoke(self, r).await,
            P::Destroy(r) => lifecycle::destroy(self, r).await,
            P::ReKey(r) => lifecycle::rekey(self, r).await,
            P::ReKeyKeyPair(r) => keypairs::rekey_key_pair(self, r).await,
            P::GetAttributes(r) => attributes::get_attributes(self, r).await,
            P::GetAttributeList(r) => attributes::get_attribute_list(self, r).await,
            P::AddAttribute(r) => attributes::add_attribute(self, r).await,
            P::ModifyAttribute(r) => attributes::modify_attribute(self, r).await,
            P::DeleteAttribute(r) => attributes::delete_attribute(self, r).await,
            P::SetAttribute(r) => attributes::set_attribute(self, r).await,
            P::Locate(r) => attributes::locate(self, r).await,
            P::Encrypt(r) => services::encrypt(self, r).await,
            P::Decrypt(r) => services::decrypt(self, r).await,
            P::Mac(r) => services::mac(self, r).await,
            P::Sign(r) => keypairs::sign(self, r).await,
            P::SignatureVerify(r) => keypairs::signature_verify(self, r).await,
            P::RngRetrieve(r) => services::rng_retrieve(r),
            P::Check(r) => services::check(self, r).await,
            P::Log(r) => Ok(services::log(self, r)),
            P::Interop(r) if self.engine.config.interop => Ok(services::interop(self, r)),
            other => Err(OpError::new(
                ResultReason::OperationNotSupported,
                format!("{:?} is not supported", other.operation()),
            )),
        }
    }

    /// The request's transaction, begun on first use.
    async fn tx(&mut self) -> Result<&mut Box<dyn Transaction>, OpError> {
        if self.tx.is_none() {
            self.tx = Some(self.engine.store.begin(self.ctx).await?);
        }
        // Just set above when it was None.
        self.tx
            .as_mut()
            .ok_or_else(|| OpError::new(ResultReason::GeneralFailure, "no transaction"))
    }

    /// The object a request names: its Unique Identifier, or the ID placeholder left by an
    /// earlier item of the batch.
    fn target(&self, given: &Option<UniqueIdentifier>) -> Result<String, OpError> {
        match given {
            Some(UniqueIdentifier::Text(uid)) => Ok(uid.clone()),
            Some(UniqueIdentifier::Enumeration(_) | UniqueIdentifier::Index(_)) | None => {
                self.placeholder.clone().ok_or_else(|| {
                    OpError::new(
                        ResultReason::InvalidMessage,
                        "Unique Identifier missing and no ID placeholder set",
                    )
                })
            }
        }
    }

    /// Reads an object for use (cache first, unless this request has written: the cache holds
    /// committed objects only).
    async fn load(&mut self, uid: &str) -> Result<Arc<KeyObject>, OpError> {
        if self.wrote {
            return Ok(Arc::new(self.load_fresh(uid).await?));
        }
        let key = self.engine.cache.key(self.ctx, uid);
        if let Some(hit) = self.engine.cache.get(&key) {
            return Ok(hit);
        }
        let epoch = self.engine.cache.epoch();
        let object = Arc::new(self.load_fresh(uid).await?);
        self.engine.cache.insert(key, object.clone(), epoch);
        Ok(object)
    }

    /// Reads an object from the database, bypassing the cache (before changing it).
    async fn load_fresh(&mut self, uid: &str) -> Result<KeyObject, OpError> {
        let keyring = self.engine.keyring.clone();
        let tenant = self.ctx.tenant.clone();
        // Locked until the request commits: concurrent changes to one object serialize.
        let record = self
            .tx()
            .await?
            .get_for_update(uid)
            .await?
            .ok_or_else(|| OpError::not_found(uid))?;
        KeyObject::from_record(record, &keyring, &tenant)
    }

    async fn insert(&mut self, object: &KeyObject) -> Result<(), OpError> {
        let record = object.to_record(&self.engine.keyring, &self.ctx.tenant);
        self.wrote = true;
        self.writes += 1;
        self.tx().await?.insert(&record).await?;
        self.audit("created", &object.uid);
        Ok(())
    }

    async fn update(&mut self, object: &KeyObject, event: &str) -> Result<(), OpError> {
        let record = object.to_record(&self.engine.keyring, &self.ctx.tenant);
        self.wrote = true;
        self.writes += 1;
        self.tx().await?.update(&record).await?;
        let key = self.engine.cache.key(self.ctx, &object.uid);
        self.engine.cache.invalidate(&key);
        self.audit(event, &object.uid);
        Ok(())
    }

    /// Changes only attributes, for a change a read causes (Fresh after Get): the stored
    /// material is written back as it is, neither unwrapped nor rewrapped under the current
    /// root key, so reading an object never rewraps it.
    ///
    /// The record is re-read locked (the caller's copy may come from the cache, or from
    /// before a Destroy or Revoke committed on another replica) and written only over the
    /// version read. An object destroyed since the caller read it answers Object Destroyed:
    /// the read must not hand out material that no longer exists.
    async fn update_attributes(
        &mut self,
        uid: &str,
        event: &str,
        change: impl FnOnce(&mut kmip::message::Attributes),
    ) -> Result<(), OpError> {
        let mut record = self
            .tx()
            .await?
            .get_for_update(uid)
            .await?
            .ok_or_else(|| OpError::not_found(uid))?;
        if record.material.is_none() {
            return Err(OpError::new(
                kmip::spec::ResultReason::ObjectDestroyed,
                format!("object {uid} has been destroyed"),
            ));
        }
        let keyring = self.engine.keyring.clone();
        // Never seal attributes changed outside keysvc as if they were ours.
        let mut attributes = object::verify_record(&record, &keyring, &self.ctx.tenant)?;
        change(&mut attributes);
        record.version += 1;
        record.attributes = attributes
            .encode(Tag::ATTRIBUTES, ProtocolVersion::V2_1)
            .to_ttlv();
        record.index = object::index_pairs(&attributes);
        object::reseal(&mut record, &keyring, &self.ctx.tenant);
        self.wrote = true;
        self.writes += 1;
        self.tx().await?.update(&record).await?;
        let key = self.engine.cache.key(self.ctx, uid);
        self.engine.cache.invalidate(&key);
        self.audit(event, uid);
        Ok(())
    }

    fn audit(&self, event: &str, uid: &str) {
        tracing::info!(
            target: "audit",
            event,
            tenant = %self.ctx.tenant,
            client = %self.ctx.client_identity,
            request_id = %self.ctx.request_id,
            uid,
        );
    }
}

#[cfg(test)]
mod tests;
