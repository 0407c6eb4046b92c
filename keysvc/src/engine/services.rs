//! Server information and cryptographic services: Discover Versions, Query, Encrypt,
//! Decrypt, MAC, RNG Retrieve.

use std::sync::Arc;

use kmip::message::payloads::*;
use kmip::message::{ByteString, CryptographicParameters, DateTime, ResponsePayload, UsageLimits};
use kmip::spec::{
    BlockCipherMode, CryptographicAlgorithm, CryptographicUsageMask, PaddingMethod, QueryFunction,
    ResultReason, State, UsageLimitsUnit,
};
use kmip::{Item, ProtocolVersion, Tag};

use super::{Engine, KeyObject, OpError, Request, MAX_RNG_BYTES};
use crate::cryptosvc::{self, CipherParams, CryptoError};

/// Longest Log Message written to the audit log, in characters: a client cannot fill the log
/// with one request (the message is cut, the operation still succeeds).
const MAX_LOG_MESSAGE_CHARS: usize = 1024;

pub(super) fn discover_versions(r: &DiscoverVersionsRequest) -> ResponsePayload {
    // The client's list is its preference order; answer the versions we share, in it.
    let versions = if r.protocol_versions.is_empty() {
        ProtocolVersion::SUPPORTED.to_vec()
    } else {
        r.protocol_versions
            .iter()
            .copied()
            .filter(|v| v.is_supported())
            .collect()
    };
    ResponsePayload::DiscoverVersions(DiscoverVersionsResponse {
        protocol_versions: versions,
    })
}

pub(super) fn query(req: &Request<'_>, r: &QueryRequest) -> ResponsePayload {
    let v = req.version;
    let asked = |f: QueryFunction| r.query_functions.contains(&f);
    let mut response = QueryResponse::default();
    if asked(QueryFunction::QueryOperations) {
        response.operations = req.engine.served_operations(v);
    }
    if asked(QueryFunction::QueryObjects) {
        response.object_types = Engine::served_object_types(v);
    }
    if asked(QueryFunction::QueryServerInformation) {
        response.vendor_identification = Some(req.engine.config.vendor.clone());
        response.server_information = Some(Item::structure(Tag::SERVER_INFORMATION, Vec::new()));
    }
    ResponsePayload::Query(response)
}

/// What a cryptographic operation does with its key, which decides the date attributes that
/// apply: applying protection (encrypt, MAC) ends at the Protect Stop Date (KMIP 2.1 §4.41),
/// processing protected data (decrypt) begins at the Process Start Date (§4.40).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    Protect,
    Process,
}

/// Refuses a key outside its protect or process window.
fn check_dates(key: &KeyObject, uid: &str, purpose: Purpose) -> Result<(), OpError> {
    let now = DateTime::now().seconds();
    let date = |tag| -> Result<Option<i64>, OpError> {
        let d: Option<DateTime> = key
            .attributes
            .typed(tag)
            .map_err(|e| OpError::new(ResultReason::GeneralFailure, e.to_string()))?;
        Ok(d.map(|d| d.seconds()))
    };
    let refused = match purpose {
        Purpose::Protect => date(Tag::PROTECT_STOP_DATE)?
            .filter(|stop| *stop <= now)
            .map(|_| "is past its Protect Stop Date: it no longer protects"),
        Purpose::Process => date(Tag::PROCESS_START_DATE)?
            .filter(|start| *start > now)
            .map(|_| "has not reached its Process Start Date: it does not process yet"),
    };
    match refused {
        Some(why) => Err(OpError::new(
            ResultReason::WrongKeyLifecycleState,
            format!("object {uid} {why}"),
        )),
        None => Ok(()),
    }
}

/// Loads a key for a cryptographic operation and checks its state, dates and usage.
pub(super) async fn usable_key(
    req: &mut Request<'_>,
    given: &Option<kmip::message::UniqueIdentifier>,
    allowed: &[State],
    usage: CryptographicUsageMask,
    operation: &str,
    purpose: Purpose,
) -> Result<(String, Arc<KeyObject>), OpError> {
    let uid = req.target(given)?;
    let key = req.load(&uid).await?;
    let state = key.state();
    if !allowed.contains(&state) {
        return Err(OpError::new(
            ResultReason::WrongKeyLifecycleState,
            format!(
                "{operation} needs an Active key; object {uid} is {}",
                state.name()
            ),
        ));
    }
    check_dates(&key, &uid, purpose)?;
    if !key.usage_mask().contains(usage) {
        return Err(OpError::new(
            ResultReason::IncompatibleCryptographicUsageMask,
            format!("the usage mask of object {uid} does not allow {operation}"),
        ));
    }
    if key.object.as_ref().and_then(|o| o.key_block()).is_none() {
        return Err(OpError::new(
            ResultReason::InvalidObjectType,
            format!("object {uid} holds no key"),
        ));
    }
    req.placeholder = Some(uid.clone());
    Ok((uid, key))
}

/// The cipher a key encrypts and decrypts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cipher {
    Aes(CipherParams),
    /// The ChaCha20 stream cipher (KMIP 2.0+ Cryptographic Algorithm), no mode or padding.
    ChaCha20,
    /// The ChaCha20-Poly1305 AEAD (RFC 8439; KMIP 2.0+ Cryptographic Algorithm), Block Cipher
    /// Mode AEAD or none; the requested Tag Length in bytes.
    ChaCha20Poly1305 {
        tag_length: Option<usize>,
    },
}

/// The cipher to use: the request's parameters, else the key's own Cryptographic Parameters
/// attribute, else AES-CBC with PKCS#5 padding (what MongoDB expects when it sends none).
fn parameters(
    requested: &Option<CryptographicParameters>,
    key: &KeyObject,
) -> Result<Cipher, OpError> {
    let from_key: Option<CryptographicParameters> = key
        .attributes
        .typed(Tag::CRYPTOGRAPHIC_PARAMETERS)
        .map_err(|e| OpError::invalid_field(e.to_string()))?;
    let p = requested.clone().or(from_key).unwrap_or_default();
    let algorithm =
        p.cryptographic_algorithm
            .or(key.attributes.cryptographic_algorithm().ok().flatten());
    match algorithm {
        None | Some(CryptographicAlgorithm::Aes) => {}
        Some(CryptographicAlgorithm::ChaCha20) => {
            // A stream cipher: a block cipher mode or padding is a mistake, not a detail.
            if p.block_cipher_mode.is_some()
                || p.padding_method.is_some_and(|m| m != PaddingMethod::None)
            {
                return Err(OpError::invalid_field(
                    "ChaCha20 takes no block cipher mode or padding",
                ));
            }
            return Ok(Cipher::ChaCha20);
        }
        Some(CryptographicAlgorithm::ChaCha20Poly1305) => {
            if p.block_cipher_mode
                .is_some_and(|m| m != BlockCipherMode::Aead)
                || p.padding_method.is_some_and(|m| m != PaddingMethod::None)
            {
                return Err(OpError::invalid_field(
                    "ChaCha20-Poly1305 takes block cipher mode AEAD (or none) and no padding",
                ));
            }
            // IV Length is in bits; RFC 8439's nonce is 96.
            if let Some(bits) = p.iv_length.filter(|&b| b != 96) {
                return Err(OpError::from(CryptoError::BadIvLength {
                    expected: cryptosvc::CHACHA20_NONCE_LEN,
                    got: (bits.max(0) / 8) as usize,
                }));
            }
            return Ok(Cipher::ChaCha20Poly1305 {
                tag_length: p.tag_length.map(|t| t.max(0) as usize),
            });
        }
        Some(_) => {
            return Err(OpError::new(
                ResultReason::CryptographicFailure,
                "only AES, ChaCha20 and ChaCha20-Poly1305 keys encrypt and decrypt",
            ))
        }
    }
    let mode = p.block_cipher_mode.unwrap_or(BlockCipherMode::Cbc);
    let padding = match (mode, p.padding_method) {
        (BlockCipherMode::Cbc, None) => Some(PaddingMethod::Pkcs5),
        (_, padding) => padding,
    };
    Ok(Cipher::Aes(CipherParams {
        mode,
        padding,
        tag_length: p.tag_length.map(|t| t.max(0) as usize),
        iv_length: p.iv_length.map(|bits| (bits.max(0) / 8) as usize),
    }))
}

/// ChaCha20 alone authenticates nothing: refuse AAD or a tag rather than ignore them.
fn no_aead(aad: &Option<ByteString>, tag: &Option<ByteString>) -> Result<(), OpError> {
    if aad.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(OpError::from(CryptoError::UnexpectedParameter(
            "additional authenticated data",
        )));
    }
    if tag.is_some() {
        return Err(OpError::from(CryptoError::UnexpectedParameter(
            "authentication tag",
        )));
    }
    Ok(())
}

/// Multi-part (streaming) operations are not supported; a single part is.
pub(super) fn single_part(
    correlation: &Option<ByteString>,
    init: Option<bool>,
    last: Option<bool>,
) -> Result<(), OpError> {
    if correlation.is_some()
        || init == Some(false)
        || last == Some(false)
        || (init == Some(true) && last != Some(true))
    {
        return Err(OpError::new(
            ResultReason::FeatureNotSupported,
            "multi-part cryptographic operations are not supported",
        ));
    }
    Ok(())
}

pub(super) fn data(d: &Option<ByteString>) -> Result<&[u8], OpError> {
    d.as_deref()
        .ok_or_else(|| OpError::new(ResultReason::InvalidMessage, "Data is required"))
}

pub(super) async fn encrypt(
    req: &mut Request<'_>,
    r: &EncryptRequest,
) -> Result<ResponsePayload, OpError> {
    single_part(&r.correlation_value, r.init_indicator, r.final_indicator)?;
    let (uid, key) = usable_key(
        req,
        &r.unique_identifier,
        &[State::Active],
        CryptographicUsageMask::ENCRYPT,
        "Encrypt",
        Purpose::Protect,
    )
    .await?;
    let params = parameters(&r.cryptographic_parameters, &key)?;
    let random_iv = r
        .cryptographic_parameters
        .as_ref()
        .and_then(|p| p.random_iv)
        == Some(true);
    let iv = if random_iv {
        None
    } else {
        r.iv_counter_nonce.as_deref()
    };
    let key_bytes = key.key_bytes().unwrap_or_default();
    let plaintext = data(&r.data)?;
    let sealed = match params {
        Cipher::Aes(params) => cryptosvc::encrypt(
            key_bytes,
            &params,
            iv,
            plaintext,
            r.authenticated_encryption_additional_data.as_deref(),
        ),
        Cipher::ChaCha20 => {
            no_aead(&r.authenticated_encryption_additional_data, &None)?;
            cryptosvc::chacha20_encrypt(key_bytes, iv, plaintext)
        }
        Cipher::ChaCha20Poly1305 { tag_length } => cryptosvc::chacha20poly1305_encrypt(
            key_bytes,
            iv,
            plaintext,
            r.authenticated_encryption_additional_data.as_deref(),
            tag_length,
        ),
    }
    .map_err(OpError::from)?;
    // The ciphertext is returned only once the allocation is recorded in this request's
    // transaction (KMIP 2.1 §6.1.17); computing it first is invisible to the client.
    if key.attributes.get(Tag::USAGE_LIMITS).is_some() {
        allocate_usage(req, &uid, plaintext.len()).await?;
    }
    Ok(ResponsePayload::Encrypt(EncryptResponse {
        unique_identifier: uid.into(),
        data: Some(ByteString::new(sealed.data)),
        iv_counter_nonce: sealed.iv.map(ByteString::new),
        correlation_value: None,
        authenticated_encryption_tag: sealed.tag.map(ByteString::new),
    }))
}

pub(super) async fn decrypt(
    req: &mut Request<'_>,
    r: &DecryptRequest,
) -> Result<ResponsePayload, OpError> {
    single_part(&r.correlation_value, r.init_indicator, r.final_indicator)?;
    // A deactivated key still decrypts what it encrypted (SP 800-57 "process only").
    let (uid, key) = usable_key(
        req,
        &r.unique_identifier,
        &[State::Active, State::Deactivated],
        CryptographicUsageMask::DECRYPT,
        "Decrypt",
        Purpose::Process,
    )
    .await?;
    let params = parameters(&r.cryptographic_parameters, &key)?;
    let key_bytes = key.key_bytes().unwrap_or_default();
    let iv = r.iv_counter_nonce.as_deref();
    let plain = match params {
        Cipher::Aes(params) => cryptosvc::decrypt(
            key_bytes,
            &params,
            iv,
            data(&r.data)?,
            r.authenticated_encryption_additional_data.as_deref(),
            r.authenticated_encryption_tag.as_deref(),
        ),
        Cipher::ChaCha20 => {
            no_aead(
                &r.authenticated_encryption_additional_data,
                &r.authenticated_encryption_tag,
            )?;
            cryptosvc::chacha20_decrypt(key_bytes, iv, data(&r.data)?)
        }
        Cipher::ChaCha20Poly1305 { tag_length } => cryptosvc::chacha20poly1305_decrypt(
            key_bytes,
            iv,
            data(&r.data)?,
            r.authenticated_encryption_additional_data.as_deref(),
            r.authenticated_encryption_tag.as_deref(),
            tag_length,
        ),
    }
    .map_err(OpError::from)?;
    Ok(ResponsePayload::Decrypt(DecryptResponse {
        unique_identifier: uid.into(),
        data: Some(kmip::message::ByteString(plain)),
        correlation_value: None,
    }))
}

pub(super) async fn mac(req: &mut Request<'_>, r: &MacRequest) -> Result<ResponsePayload, OpError> {
    single_part(&r.correlation_value, r.init_indicator, r.final_indicator)?;
    let (uid, key) = usable_key(
        req,
        &r.unique_identifier,
        &[State::Active],
        CryptographicUsageMask::MAC_GENERATE,
        "MAC",
        Purpose::Protect,
    )
    .await?;
    let algorithm = r
        .cryptographic_parameters
        .as_ref()
        .and_then(|p| p.cryptographic_algorithm)
        .or(key.attributes.cryptographic_algorithm().ok().flatten())
        .ok_or_else(|| OpError::invalid_field("no MAC algorithm"))?;
    let tag = cryptosvc::mac(
        algorithm,
        key.key_bytes().unwrap_or_default(),
        data(&r.data)?,
    )
    .map_err(OpError::from)?;
    Ok(ResponsePayload::Mac(MacResponse {
        unique_identifier: uid.into(),
        mac_data: Some(ByteString::new(tag)),
        correlation_value: None,
    }))
}

/// Takes one Encrypt's allocation from the key's Usage Limits (KMIP 2.1 §4.59, §6.1.17):
/// `bytes` of plaintext for the Byte unit, one for the Object unit. Permission Denied when
/// the remaining count does not cover it.
async fn allocate_usage(req: &mut Request<'_>, uid: &str, bytes: usize) -> Result<(), OpError> {
    // The cached copy may lag: count from the stored object, inside this transaction.
    let mut key = req.load_fresh(uid).await?;
    let Some(mut limits) = key
        .attributes
        .typed::<UsageLimits>(Tag::USAGE_LIMITS)
        .map_err(|e| OpError::new(ResultReason::GeneralFailure, e.to_string()))?
    else {
        return Ok(());
    };
    let wanted = match limits.unit {
        UsageLimitsUnit::Byte => i64::try_from(bytes).unwrap_or(i64::MAX),
        // One Encrypt protects one object; units a later version may add count the same.
        _ => 1,
    };
    let remaining = limits.count.unwrap_or(limits.total);
    if wanted > remaining {
        return Err(OpError::new(
            ResultReason::PermissionDenied,
            format!("the usage limits of object {uid} are exhausted"),
        ));
    }
    limits.count = Some(remaining - wanted);
    key.attributes.set_typed(Tag::USAGE_LIMITS, &limits);
    key.touch(DateTime::now());
    req.update(&key, "usage allocated").await
}

/// Check (KMIP 2.1 §6.1.7): whether the object may be used for the given usage, amount of
/// protection and lease. A refusal empties the ID Placeholder, so the rest of the batch does
/// not go on with the object.
pub(super) async fn check(
    req: &mut Request<'_>,
    r: &CheckRequest,
) -> Result<ResponsePayload, OpError> {
    let uid = req.target(&r.unique_identifier)?;
    let key = req.load(&uid).await?;
    let refusal = if r
        .cryptographic_usage_mask
        .is_some_and(|wanted| !key.usage_mask().contains(wanted))
    {
        Some(OpError::new(
            ResultReason::IncompatibleCryptographicUsageMask,
            format!("the usage mask of object {uid} does not allow that use"),
        ))
    } else {
        let limits: Option<UsageLimits> = key
            .attributes
            .typed(Tag::USAGE_LIMITS)
            .map_err(|e| OpError::new(ResultReason::GeneralFailure, e.to_string()))?;
        let remaining = limits.map(|l| l.count.unwrap_or(l.total));
        match (r.usage_limits_count, remaining) {
            (Some(wanted), Some(left)) if wanted > left => Some(OpError::new(
                ResultReason::UsageLimitExceeded,
                format!("object {uid} has {left} units of usage left"),
            )),
            // Every lease is granted: the Lease Time is zero, "no lease time limit".
            _ => None,
        }
    };
    if let Some(e) = refusal {
        req.placeholder = None;
        return Err(e);
    }
    req.placeholder = Some(uid.clone());
    Ok(ResponsePayload::Check(CheckResponse {
        unique_identifier: Some(uid.into()),
        usage_limits_count: None,
        cryptographic_usage_mask: None,
        lease_time: None,
    }))
}

/// Log (KMIP 2.1 §6.1.29): the client's message goes to the audit log, with who sent it.
pub(super) fn log(req: &Request<'_>, r: &LogRequest) -> ResponsePayload {
    let message: String = r.log_message.chars().take(MAX_LOG_MESSAGE_CHARS).collect();
    tracing::info!(
        target: "audit",
        event = "client log",
        tenant = %req.ctx.tenant,
        client = %req.ctx.client_identity,
        request_id = %req.ctx.request_id,
        message,
    );
    ResponsePayload::Log(EmptyResponse {})
}

/// Interop (KMIP 2.1 §6.1.26), only when enabled: noted in the log, nothing else.
pub(super) fn interop(req: &Request<'_>, r: &InteropRequest) -> ResponsePayload {
    tracing::info!(
        tenant = %req.ctx.tenant,
        function = r.interop_function.name(),
        identifier = %r.interop_identifier,
        "interop test case",
    );
    ResponsePayload::Interop(EmptyResponse {})
}

pub(super) fn rng_retrieve(r: &RngRetrieveRequest) -> Result<ResponsePayload, OpError> {
    if !(1..=MAX_RNG_BYTES).contains(&r.data_length) {
        return Err(OpError::invalid_field(format!(
            "Data Length must be 1 to {MAX_RNG_BYTES} bytes"
        )));
    }
    let bytes = cryptosvc::random_bytes(r.data_length as usize).map_err(OpError::from)?;
    Ok(ResponsePayload::RngRetrieve(RngRetrieveResponse {
        data: kmip::message::ByteString(bytes),
    }))
}
