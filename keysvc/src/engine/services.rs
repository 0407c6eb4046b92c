//! Server information and cryptographic services: Discover Versions, Query, Encrypt,
//! Decrypt, MAC, RNG Retrieve.

use std::sync::Arc;

use kmip::message::payloads::*;
use kmip::message::{ByteString, CryptographicParameters, ResponsePayload};
use kmip::spec::{
    BlockCipherMode, CryptographicAlgorithm, CryptographicUsageMask, ObjectType, Operation,
    PaddingMethod, QueryFunction, ResultReason, State,
};
use kmip::{Item, ProtocolVersion, Tag};

use super::{KeyObject, OpError, Request, MAX_RNG_BYTES};
use crate::cryptosvc::{self, CipherParams, CryptoError};

/// The operations this server executes (answered to Query Operations).
const OPERATIONS: [Operation; 20] = [
    Operation::DiscoverVersions,
    Operation::Query,
    Operation::Create,
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
    Operation::ReKey,
    Operation::RngRetrieve,
];

const OBJECT_TYPES: [ObjectType; 3] = [
    ObjectType::SymmetricKey,
    ObjectType::SecretData,
    ObjectType::OpaqueObject,
];

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
    let mut response = QueryResponse {
        operations: Vec::new(),
        object_types: Vec::new(),
        vendor_identification: None,
        server_information: None,
        application_namespaces: Vec::new(),
        extension_information: Vec::new(),
        attestation_types: Vec::new(),
        rng_parameters: Vec::new(),
        profile_information: Vec::new(),
        validation_information: Vec::new(),
        capability_information: Vec::new(),
        client_registration_methods: Vec::new(),
        defaults_information: None,
        protection_storage_masks: Vec::new(),
    };
    if asked(QueryFunction::QueryOperations) {
        response.operations = OPERATIONS
            .into_iter()
            .filter(|o| o.is_defined_in(v))
            .collect();
    }
    if asked(QueryFunction::QueryObjects) {
        response.object_types = OBJECT_TYPES.to_vec();
    }
    if asked(QueryFunction::QueryServerInformation) {
        response.vendor_identification = Some(req.engine.config.vendor.clone());
        response.server_information = Some(Item::structure(Tag::SERVER_INFORMATION, Vec::new()));
    }
    ResponsePayload::Query(response)
}

/// Loads a key for a cryptographic operation and checks its state and usage.
async fn usable_key(
    req: &mut Request<'_>,
    given: &Option<kmip::message::UniqueIdentifier>,
    allowed: &[State],
    usage: CryptographicUsageMask,
    operation: &str,
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
    if !key.usage_mask().contains(usage) {
        return Err(OpError::new(
            ResultReason::IncompatibleCryptographicUsageMask,
            format!("the usage mask of object {uid} does not allow {operation}"),
        ));
    }
    if key.key_bytes().is_none() {
        return Err(OpError::new(
            ResultReason::InvalidObjectType,
            format!("object {uid} holds no key"),
        ));
    }
    req.placeholder = Some(uid.clone());
    Ok((uid, key))
}

/// The parameters to use: the request's, else the key's own Cryptographic Parameters
/// attribute, else AES-CBC with PKCS#5 padding (what MongoDB expects when it sends none).
fn parameters(
    requested: &Option<CryptographicParameters>,
    key: &KeyObject,
) -> Result<CipherParams, OpError> {
    let from_key: Option<CryptographicParameters> = key
        .attributes
        .typed(Tag::CRYPTOGRAPHIC_PARAMETERS)
        .map_err(|e| OpError::invalid_field(e.to_string()))?;
    let p = requested.clone().or(from_key).unwrap_or_default();
    let algorithm =
        p.cryptographic_algorithm
            .or(key.attributes.cryptographic_algorithm().ok().flatten());
    if algorithm.is_some_and(|a| a != CryptographicAlgorithm::Aes) {
        return Err(OpError::new(
            ResultReason::CryptographicFailure,
            "only AES keys encrypt and decrypt",
        ));
    }
    let mode = p.block_cipher_mode.unwrap_or(BlockCipherMode::Cbc);
    let padding = match (mode, p.padding_method) {
        (BlockCipherMode::Cbc, None) => Some(PaddingMethod::Pkcs5),
        (_, padding) => padding,
    };
    Ok(CipherParams {
        mode,
        padding,
        tag_length: p.tag_length.map(|t| t.max(0) as usize),
        iv_length: p.iv_length.map(|bits| (bits.max(0) / 8) as usize),
    })
}

/// Multi-part (streaming) operations are not supported; a single part is.
fn single_part(
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

fn crypto_error(e: CryptoError) -> OpError {
    let reason = match e {
        CryptoError::AuthenticationFailed | CryptoError::BadPadding => {
            ResultReason::CryptographicFailure
        }
        _ => ResultReason::InvalidField,
    };
    OpError::new(reason, e.to_string())
}

fn data(d: &Option<ByteString>) -> Result<&[u8], OpError> {
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
    let sealed = cryptosvc::encrypt(
        key_bytes,
        &params,
        iv,
        data(&r.data)?,
        r.authenticated_encryption_additional_data.as_deref(),
    )
    .map_err(crypto_error)?;
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
    )
    .await?;
    let params = parameters(&r.cryptographic_parameters, &key)?;
    let plain = cryptosvc::decrypt(
        key.key_bytes().unwrap_or_default(),
        &params,
        r.iv_counter_nonce.as_deref(),
        data(&r.data)?,
        r.authenticated_encryption_additional_data.as_deref(),
        r.authenticated_encryption_tag.as_deref(),
    )
    .map_err(crypto_error)?;
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
    .map_err(crypto_error)?;
    Ok(ResponsePayload::Mac(MacResponse {
        unique_identifier: uid.into(),
        mac_data: Some(ByteString::new(tag)),
        correlation_value: None,
    }))
}

pub(super) fn rng_retrieve(r: &RngRetrieveRequest) -> Result<ResponsePayload, OpError> {
    if !(1..=MAX_RNG_BYTES).contains(&r.data_length) {
        return Err(OpError::invalid_field(format!(
            "Data Length must be 1 to {MAX_RNG_BYTES} bytes"
        )));
    }
    let bytes = cryptosvc::random_bytes(r.data_length as usize).map_err(crypto_error)?;
    Ok(ResponsePayload::RngRetrieve(RngRetrieveResponse {
        data: kmip::message::ByteString(bytes),
    }))
}
