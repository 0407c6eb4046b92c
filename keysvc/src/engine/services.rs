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
use crate::envelope::TokenPurpose;

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

/// RSA-OAEP takes no IV, AAD or tag: refused rather than ignored.
fn no_iv_or_aead(
    iv: &Option<ByteString>,
    aad: &Option<ByteString>,
    tag: &Option<ByteString>,
) -> Result<(), OpError> {
    if iv.is_some() {
        return Err(OpError::from(CryptoError::UnexpectedParameter(
            "IV/counter/nonce",
        )));
    }
    no_aead(aad, tag)
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

/// MAC, Sign and Signature Verify have no multi-part form (nor have Encrypt and Decrypt but
/// in AES-GCM, see [`Part`]): Init Indicator, Final Indicator false or a Correlation Value is
/// Feature Not Supported.
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

/// How long a multi-part GCM stream lives: a Correlation Value is refused this long after
/// the stream's first part (the issue time travels in the token and is kept from part to
/// part).
const STREAM_LIFETIME_SECS: i64 = 600;

/// How far a token's issue time may lie in the future: the clock difference tolerated
/// between replicas.
const STREAM_CLOCK_SKEW_SECS: i64 = 60;

/// Why a Correlation Value is refused when it does not open: one message for garbage, a
/// tampered token, another tenant's, another key's and the other direction's.
const STREAM_TOKEN_REFUSED: &str =
    "the Correlation Value is not one this server issued for this key and operation";

/// A request's place in a multi-part (streaming) operation (KMIP 2.1 §6.1.17 Encrypt,
/// §6.1.12 Decrypt: Init Indicator, Correlation Value, Final Indicator). Only AES-GCM has
/// more than one part here; its state between parts travels in the Correlation Value, a
/// token sealed for the tenant, the key and the direction (see [`seal_stream`]), so that no
/// replica keeps any and any replica takes the next part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part<'a> {
    /// The whole operation in one request (also Init and Final Indicator both true).
    Single,
    /// Init Indicator true, Final Indicator not: answers a Correlation Value.
    First,
    /// Carries the Correlation Value of the part before; `last` when Final Indicator is true
    /// (it answers the tag, or checks it), else it answers the next Correlation Value.
    Next { token: &'a [u8], last: bool },
}

impl<'a> Part<'a> {
    fn of(
        correlation: &'a Option<ByteString>,
        init: Option<bool>,
        last: Option<bool>,
    ) -> Result<Self, OpError> {
        match (correlation.as_deref(), init, last) {
            (Some(_), Some(true), _) => Err(OpError::new(
                ResultReason::InvalidMessage,
                "the first part of a multi-part operation (Init Indicator true) takes no Correlation Value",
            )),
            (Some(token), _, last) => Ok(Part::Next {
                token,
                last: last == Some(true),
            }),
            (None, Some(true), Some(true)) => Ok(Part::Single),
            (None, Some(true), _) => Ok(Part::First),
            (None, Some(false), _) | (None, None, Some(false)) => Err(OpError::new(
                ResultReason::InvalidMessage,
                "a later part of a multi-part operation needs the Correlation Value answered to the part before",
            )),
            (None, None, _) => Ok(Part::Single),
        }
    }
}

/// The AES-GCM parameters of a multi-part operation's part. Any other cipher: Feature Not
/// Supported, as before multi-part GCM existed. A later part may name no parameters at all
/// (its token says GCM); `None` then.
fn stream_params(
    part: Part<'_>,
    requested: &Option<CryptographicParameters>,
    key: &KeyObject,
) -> Result<Option<CipherParams>, OpError> {
    if matches!(part, Part::Next { .. }) && requested.is_none() {
        return Ok(None);
    }
    match parameters(requested, key)? {
        Cipher::Aes(p) if p.mode == BlockCipherMode::Gcm => Ok(Some(p)),
        _ => Err(OpError::new(
            ResultReason::FeatureNotSupported,
            "multi-part cryptographic operations are supported for AES-GCM only",
        )),
    }
}

/// A later part carries only data (and, in the last part of a Decrypt, the tag): the IV and
/// the additional authenticated data belong to the first part (KMIP 2.1 §2.1.7.7), and a Tag
/// Length named again must be the stream's.
fn later_part_fields(
    p: Option<CipherParams>,
    stream: &cryptosvc::GcmStream,
    iv: &Option<ByteString>,
    aad: &Option<ByteString>,
) -> Result<(), OpError> {
    if iv.is_some() {
        return Err(OpError::invalid_field(
            "the IV/Counter/Nonce of a multi-part operation goes with its first part only",
        ));
    }
    if aad.is_some() {
        return Err(OpError::invalid_field(
            "the additional authenticated data of a multi-part operation goes with its first part only",
        ));
    }
    if let Some(t) = p
        .and_then(|p| p.tag_length)
        .filter(|&t| t != stream.tag_length())
    {
        return Err(OpError::invalid_field(format!(
            "Tag Length {t} differs from the {} bytes the multi-part operation started with",
            stream.tag_length()
        )));
    }
    Ok(())
}

/// The Correlation Value handed back after a part: `issued (i64 seconds) ‖ stream state`,
/// sealed by the keyring for the tenant, the key and the direction.
fn seal_stream(
    req: &Request<'_>,
    uid: &str,
    purpose: TokenPurpose,
    issued: i64,
    stream: &cryptosvc::GcmStream,
) -> ByteString {
    let mut payload = issued.to_be_bytes().to_vec();
    payload.extend_from_slice(&stream.to_bytes());
    ByteString::new(
        req.engine
            .keyring
            .seal_token(&req.ctx.tenant, uid, purpose, &payload),
    )
}

/// Opens a Correlation Value for the key and direction: the stream's issue time and state.
/// Invalid Field if it does not open (one message whatever the cause) or has expired.
fn open_stream(
    req: &Request<'_>,
    uid: &str,
    purpose: TokenPurpose,
    token: &[u8],
) -> Result<(i64, cryptosvc::GcmStream), OpError> {
    let refused = || OpError::invalid_field(STREAM_TOKEN_REFUSED);
    let payload = req
        .engine
        .keyring
        .open_token(&req.ctx.tenant, uid, purpose, token)
        .map_err(|_| refused())?;
    let (issued, state) = payload.split_at_checked(8).ok_or_else(refused)?;
    let issued = i64::from_be_bytes(issued.try_into().map_err(|_| refused())?);
    let stream = cryptosvc::GcmStream::from_bytes(state).ok_or_else(refused)?;
    let now = DateTime::now().seconds();
    if now.saturating_sub(issued) > STREAM_LIFETIME_SECS
        || issued.saturating_sub(now) > STREAM_CLOCK_SKEW_SECS
    {
        return Err(OpError::invalid_field(format!(
            "the Correlation Value has expired: a multi-part operation must end within {STREAM_LIFETIME_SECS} seconds of its first part"
        )));
    }
    Ok((issued, stream))
}

/// A part's data: optional in a multi-part operation (KMIP 2.1 Tables 196, 214: "Yes for
/// single-part. No for multi-part."), none being no bytes.
fn stream_data(d: &Option<ByteString>) -> &[u8] {
    d.as_deref().unwrap_or_default()
}

pub(super) fn data(d: &Option<ByteString>) -> Result<&[u8], OpError> {
    d.as_deref()
        .ok_or_else(|| OpError::new(ResultReason::InvalidMessage, "Data is required"))
}

pub(super) async fn encrypt(
    req: &mut Request<'_>,
    r: &EncryptRequest,
) -> Result<ResponsePayload, OpError> {
    let part = Part::of(&r.correlation_value, r.init_indicator, r.final_indicator);
    if !matches!(part, Ok(Part::Single)) {
        return encrypt_stream(req, r, part).await;
    }
    let (uid, key) = usable_key(
        req,
        &r.unique_identifier,
        &[State::Active],
        CryptographicUsageMask::ENCRYPT,
        "Encrypt",
        Purpose::Protect,
    )
    .await?;
    if super::keypairs::is_asymmetric(&key) {
        no_iv_or_aead(
            &r.iv_counter_nonce,
            &r.authenticated_encryption_additional_data,
            &None,
        )?;
        let plaintext = data(&r.data)?;
        let ciphertext =
            super::keypairs::oaep_encrypt(&key, &uid, &r.cryptographic_parameters, plaintext)?;
        if key.attributes.get(Tag::USAGE_LIMITS).is_some() {
            allocate_usage(req, &uid, plaintext.len()).await?;
        }
        return Ok(ResponsePayload::Encrypt(EncryptResponse {
            unique_identifier: uid.into(),
            data: Some(ByteString::new(ciphertext)),
            iv_counter_nonce: None,
            correlation_value: None,
            authenticated_encryption_tag: None,
        }));
    }
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
    let part = Part::of(&r.correlation_value, r.init_indicator, r.final_indicator);
    if !matches!(part, Ok(Part::Single)) {
        return decrypt_stream(req, r, part).await;
    }
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
    if super::keypairs::is_asymmetric(&key) {
        no_iv_or_aead(
            &r.iv_counter_nonce,
            &r.authenticated_encryption_additional_data,
            &r.authenticated_encryption_tag,
        )?;
        let plain =
            super::keypairs::oaep_decrypt(&key, &uid, &r.cryptographic_parameters, data(&r.data)?)
                .await?;
        return Ok(ResponsePayload::Decrypt(DecryptResponse {
            unique_identifier: uid.into(),
            data: Some(ByteString(plain)),
            correlation_value: None,
        }));
    }
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

/// One part of a multi-part AES-GCM Encrypt (see [`Part`]). Each part takes its own Usage
/// Limits allocation, as a single-part Encrypt does.
async fn encrypt_stream(
    req: &mut Request<'_>,
    r: &EncryptRequest,
    part: Result<Part<'_>, OpError>,
) -> Result<ResponsePayload, OpError> {
    let (uid, key) = usable_key(
        req,
        &r.unique_identifier,
        &[State::Active],
        CryptographicUsageMask::ENCRYPT,
        "Encrypt",
        Purpose::Protect,
    )
    .await?;
    let part = part?;
    let params = stream_params(part, &r.cryptographic_parameters, &key)?;
    let key_bytes = key.key_bytes().unwrap_or_default();
    let plaintext = stream_data(&r.data);
    let purpose = TokenPurpose::GcmEncryptStream;
    let (mut stream, issued, generated_iv, last) = match (part, params) {
        (Part::First, Some(p)) => {
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
            let (stream, generated) = cryptosvc::GcmStream::start_encrypt(
                key_bytes,
                &p,
                iv,
                r.authenticated_encryption_additional_data.as_deref(),
            )
            .map_err(OpError::from)?;
            (stream, DateTime::now().seconds(), generated, false)
        }
        (Part::Next { token, last }, p) => {
            let (issued, stream) = open_stream(req, &uid, purpose, token)?;
            later_part_fields(
                p,
                &stream,
                &r.iv_counter_nonce,
                &r.authenticated_encryption_additional_data,
            )?;
            (stream, issued, None, last)
        }
        // Single parts do not come here; a first part always has parameters.
        _ => {
            return Err(OpError::new(
                ResultReason::GeneralFailure,
                "not a multi-part Encrypt",
            ))
        }
    };
    let ciphertext = stream
        .encrypt_part(key_bytes, plaintext)
        .map_err(OpError::from)?;
    let (correlation_value, tag) = if last {
        let tag = stream.tag(key_bytes).map_err(OpError::from)?;
        (None, Some(ByteString::new(tag)))
    } else {
        (Some(seal_stream(req, &uid, purpose, issued, &stream)), None)
    };
    if key.attributes.get(Tag::USAGE_LIMITS).is_some() {
        allocate_usage(req, &uid, plaintext.len()).await?;
    }
    Ok(ResponsePayload::Encrypt(EncryptResponse {
        unique_identifier: uid.into(),
        data: Some(ByteString::new(ciphertext)),
        iv_counter_nonce: generated_iv.map(ByteString::new),
        correlation_value,
        authenticated_encryption_tag: tag,
    }))
}

/// One part of a multi-part AES-GCM Decrypt (see [`Part`]). The tag comes with the first
/// part (KMIP 2.1 Table 196) and travels in the Correlation Value, or else with the last.
/// Every part but the last answers its plaintext before any tag is checked, as streaming GCM
/// must; the last part checks the tag over the whole stream and answers Cryptographic
/// Failure, and no data, if it differs.
async fn decrypt_stream(
    req: &mut Request<'_>,
    r: &DecryptRequest,
    part: Result<Part<'_>, OpError>,
) -> Result<ResponsePayload, OpError> {
    let (uid, key) = usable_key(
        req,
        &r.unique_identifier,
        &[State::Active, State::Deactivated],
        CryptographicUsageMask::DECRYPT,
        "Decrypt",
        Purpose::Process,
    )
    .await?;
    let part = part?;
    let params = stream_params(part, &r.cryptographic_parameters, &key)?;
    let key_bytes = key.key_bytes().unwrap_or_default();
    let purpose = TokenPurpose::GcmDecryptStream;
    let (mut stream, issued, last) = match (part, params) {
        (Part::First, Some(p)) => {
            let stream = cryptosvc::GcmStream::start_decrypt(
                key_bytes,
                &p,
                r.iv_counter_nonce.as_deref(),
                r.authenticated_encryption_additional_data.as_deref(),
                r.authenticated_encryption_tag.as_deref(),
            )
            .map_err(OpError::from)?;
            (stream, DateTime::now().seconds(), false)
        }
        (Part::Next { token, last }, p) => {
            let (issued, stream) = open_stream(req, &uid, purpose, token)?;
            later_part_fields(
                p,
                &stream,
                &r.iv_counter_nonce,
                &r.authenticated_encryption_additional_data,
            )?;
            (stream, issued, last)
        }
        _ => {
            return Err(OpError::new(
                ResultReason::GeneralFailure,
                "not a multi-part Decrypt",
            ))
        }
    };
    // The tag goes with the first part (KMIP 2.1 Table 196), or else with the last.
    let tag = r.authenticated_encryption_tag.as_deref();
    if let (Part::Next { .. }, Some(_)) = (part, tag) {
        if !last || stream.has_tag() {
            return Err(OpError::invalid_field(
                "the authentication tag of a multi-part Decrypt goes with its first part, or else its last, once",
            ));
        }
    }
    let plain = stream
        .decrypt_part(key_bytes, stream_data(&r.data))
        .map_err(OpError::from)?;
    let correlation_value = if last {
        stream.verify(key_bytes, tag).map_err(OpError::from)?;
        None
    } else {
        Some(seal_stream(req, &uid, purpose, issued, &stream))
    };
    Ok(ResponsePayload::Decrypt(DecryptResponse {
        unique_identifier: uid.into(),
        data: Some(ByteString(plain)),
        correlation_value,
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
