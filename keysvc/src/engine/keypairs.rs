//! Asymmetric keys in the engine: Create Key Pair, Sign, Signature Verify, and the parts of
//! Register and Get that are particular to public keys, private keys and certificates. The
//! cryptography and the key encodings are `crate::asymmetric`'s.
//!
//! A pair is two objects written in the request's transaction: the private key links to
//! its public key (Public Key Link) and the public key to its private key (Private Key
//! Link); each is sealed like any other object, the private key's material included.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kmip::message::payloads::*;
use kmip::message::{
    Attribute, Attributes, ByteString, CryptographicParameters, DateTime, KeyBlock, Link,
    ManagedObject, PrivateKey, PublicKey, ResponsePayload, CERTIFICATE_ISSUER_PARTS,
    CERTIFICATE_SUBJECT_PARTS,
};
use kmip::spec::{
    CryptographicAlgorithm, CryptographicUsageMask, LinkType, ObjectType, RecommendedCurve,
    ResultReason, State, ValidityIndicator,
};
use kmip::{Tag, Value};
use runtime::fairness::{TenantSlots, Waited};
use tokio::sync::Semaphore;

use super::lifecycle::{
    check_client_attributes, field, link, new_object_attributes, new_uid, retire,
    successor_attributes, wrong_state,
};
use super::maintained::{self, Origin};
use super::object::KeyObject;
use super::services::{data, single_part, usable_key, Purpose};
use super::{OpError, Request};
use crate::asymmetric::{self, GeneratedPair};

/// Key generations running at once, per process: RSA-4096 takes about a second of one core,
/// so generations never take more than half the cores from everything else.
fn generation_slots() -> &'static Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Semaphore::new(cores.div_ceil(2).max(1)))
    })
}

/// One generation per tenant at a time: a tenant's burst queues behind itself, so the
/// process-wide queue holds at most one request per tenant and each tenant's turn comes
/// after at most one generation of every other tenant (first come, first served).
fn tenant_generation_slots() -> &'static TenantSlots {
    static SLOTS: OnceLock<TenantSlots> = OnceLock::new();
    SLOTS.get_or_init(|| TenantSlots::new(1))
}

/// Longest a generation waits for its turn: well inside the gateway's 30 s exchange limit,
/// so that no key is made for a client that has already been told the request timed out.
const GENERATION_WAIT: Duration = Duration::from_secs(20);

/// Generates a key pair in the tenant's turn, off the runtime threads.
async fn generate_in_turn(
    tenant: &str,
    algorithm: CryptographicAlgorithm,
    length: Option<i32>,
    curve: Option<RecommendedCurve>,
) -> Result<GeneratedPair, OpError> {
    let busy = || {
        tracing::warn!(
            tenant,
            "key pair generation refused: no turn within the wait"
        );
        OpError::new(
            ResultReason::GeneralFailure,
            "too many key pair generations in progress; not executed, retry later",
        )
    };
    let started = tokio::time::Instant::now();
    let _tenant_turn = match tenant_generation_slots()
        .take_within(tenant, GENERATION_WAIT)
        .await
    {
        Waited::AtOnce(slot) | Waited::Queued(slot) => slot,
        Waited::TimedOut => return Err(busy()),
    };
    let left = GENERATION_WAIT.saturating_sub(started.elapsed());
    let _core = tokio::time::timeout(left, generation_slots().clone().acquire_owned())
        .await
        .map_err(|_| busy())?
        .map_err(|_| OpError::new(ResultReason::GeneralFailure, "shutting down"))?;
    off_runtime(move || asymmetric::generate(algorithm, length, curve)).await
}

/// Runs a private-key operation (generation, signing, RSA decryption: a millisecond for
/// RSA-2048, tens for RSA-8192) on the blocking pool, so that no tenant's keys stall the
/// runtime threads every other request is served on.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, asymmetric::AsymError> + Send + 'static,
) -> Result<T, OpError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| OpError::new(ResultReason::GeneralFailure, "the key operation failed"))?
        .map_err(OpError::from)
}

/// The Recommended Curve a client named, in Cryptographic Domain Parameters (all versions)
/// or as the 1.x-style attribute of the same name.
fn recommended_curve(attrs: &Attributes) -> Option<RecommendedCurve> {
    let from_domain = attrs
        .get(Tag::CRYPTOGRAPHIC_DOMAIN_PARAMETERS)
        .and_then(|a| match &a.value {
            Value::Structure(items) => items.iter().find(|i| i.tag == Tag::RECOMMENDED_CURVE),
            _ => None,
        })
        .and_then(|i| match i.value {
            Value::Enumeration(v) => RecommendedCurve::from_value(v),
            _ => None,
        });
    from_domain.or_else(|| {
        attrs
            .get(Tag::RECOMMENDED_CURVE)
            .and_then(|a| match a.value {
                Value::Enumeration(v) => RecommendedCurve::from_value(v),
                _ => None,
            })
    })
}

/// The attributes of one key of the pair: the common ones, then that key's own (which win).
fn merged(common: &Attributes, own: Option<&Attributes>) -> Attributes {
    let mut out = common.clone();
    if let Some(own) = own {
        for tag in own.iter().filter_map(|a| a.tag()) {
            out.remove(tag);
        }
        for a in own.iter() {
            out.push(a.clone());
        }
        out.template_names
            .extend(own.template_names.iter().cloned());
    }
    out
}

pub(super) async fn create_key_pair(
    req: &mut Request<'_>,
    r: &CreateKeyPairRequest,
) -> Result<ResponsePayload, OpError> {
    let common = r.common_attributes.clone().unwrap_or_default();
    let private_attrs = merged(&common, r.private_key_attributes.as_ref());
    let public_attrs = merged(&common, r.public_key_attributes.as_ref());
    let allowed = [Tag::CRYPTOGRAPHIC_ALGORITHM, Tag::CRYPTOGRAPHIC_LENGTH];
    check_client_attributes(&private_attrs, &allowed)?;
    check_client_attributes(&public_attrs, &allowed)?;
    storage_acceptable([
        &r.common_protection_storage_masks,
        &r.private_protection_storage_masks,
        &r.public_protection_storage_masks,
    ])?;
    let algorithm = field(private_attrs.cryptographic_algorithm())?
        .ok_or_else(|| OpError::invalid_field("Cryptographic Algorithm is required"))?;
    if field(public_attrs.cryptographic_algorithm())? != Some(algorithm) {
        return Err(OpError::invalid_field(
            "the two keys of a pair have one Cryptographic Algorithm",
        ));
    }
    let length = field(private_attrs.cryptographic_length())?;
    let curve = recommended_curve(&private_attrs);

    let pair = generate_in_turn(req.ctx.tenant.as_str(), algorithm, length, curve).await?;
    let (private, public) = pair_objects(pair, private_attrs, public_attrs, DateTime::now())?;
    let answer = insert_pair(req, &private, &public).await?;
    Ok(ResponsePayload::CreateKeyPair(answer))
}

/// Re-key Key Pair (KMIP 2.1 §6.1.45): a new pair of the same algorithm and size replaces
/// the private key named and the public key it links to. Each new key takes its old one's
/// client attributes and names (the request's attributes over them), links to it (Replaced
/// Object Link) and is linked from it (Replacement Object Link); the pair links to itself.
/// The old keys keep their state: a client revokes them when it is done with them.
pub(super) async fn rekey_key_pair(
    req: &mut Request<'_>,
    r: &ReKeyKeyPairRequest,
) -> Result<ResponsePayload, OpError> {
    let old_private_uid = req.target(&r.private_key_unique_identifier)?;
    let mut old_private = req.load_fresh(&old_private_uid).await?;
    if old_private.object_type != ObjectType::PrivateKey || old_private.object.is_none() {
        return Err(OpError::new(
            ResultReason::InvalidObjectType,
            format!("object {old_private_uid} is not a private key with material"),
        ));
    }
    let state = old_private.state();
    if !matches!(state, State::PreActive | State::Active) {
        return Err(wrong_state(&old_private_uid, state, "ReKeyKeyPair"));
    }
    let old_public_uid = old_private
        .attributes
        .iter()
        .filter(|a| a.tag() == Some(Tag::LINK))
        .filter_map(|a| a.get::<Link>().ok())
        .find(|l| l.link_type == LinkType::PublicKeyLink)
        .and_then(|l| l.linked_object_identifier.as_text().map(str::to_owned))
        .ok_or_else(|| {
            OpError::new(
                ResultReason::InvalidObjectType,
                format!("private key {old_private_uid} links to no public key"),
            )
        })?;
    let mut old_public = req.load_fresh(&old_public_uid).await?;
    storage_acceptable([
        &r.common_protection_storage_masks,
        &r.private_protection_storage_masks,
        &r.public_protection_storage_masks,
    ])?;
    let algorithm = field(old_private.attributes.cryptographic_algorithm())?
        .ok_or_else(|| OpError::new(ResultReason::GeneralFailure, "the key has no algorithm"))?;
    let length = field(old_private.attributes.cryptographic_length())?;
    let now = DateTime::now();
    let common = r.common_attributes.clone().unwrap_or_default();
    let private_attrs = successor_attributes(
        &old_private,
        Some(&merged(&common, r.private_key_attributes.as_ref())),
        r.offset,
        now,
    )?;
    let public_attrs = successor_attributes(
        &old_public,
        Some(&merged(&common, r.public_key_attributes.as_ref())),
        r.offset,
        now,
    )?;
    let pair = generate_in_turn(req.ctx.tenant.as_str(), algorithm, length, None).await?;
    let (mut private, mut public) = pair_objects(pair, private_attrs, public_attrs, now)?;
    link(
        &mut private.attributes,
        LinkType::ReplacedObjectLink,
        &old_private_uid,
    );
    link(
        &mut public.attributes,
        LinkType::ReplacedObjectLink,
        &old_public_uid,
    );
    let answer = insert_pair(req, &private, &public).await?;
    retire(&mut old_private, &private.uid, now);
    retire(&mut old_public, &public.uid, now);
    req.update(&old_private, "rekeyed").await?;
    req.update(&old_public, "rekeyed").await?;
    Ok(ResponsePayload::ReKeyKeyPair(answer))
}

/// A request's Common, Private and Public Protection Storage Masks all allow software.
fn storage_acceptable(masks: [&Option<kmip::Item>; 3]) -> Result<(), OpError> {
    masks
        .into_iter()
        .try_for_each(|m| maintained::storage_acceptable(m.as_ref()))
}

/// The two objects of a generated pair, with fresh identifiers, each linked to the other:
/// (private key, public key).
fn pair_objects(
    pair: GeneratedPair,
    private_attrs: Attributes,
    public_attrs: Attributes,
    now: DateTime,
) -> Result<(KeyObject, KeyObject), OpError> {
    let GeneratedPair {
        private,
        public,
        algorithm,
        length,
    } = pair;
    let (private_uid, public_uid) = (new_uid(), new_uid());
    let private = new_key(
        &private_uid,
        ObjectType::PrivateKey,
        private_attrs,
        ManagedObject::PrivateKey(PrivateKey { key_block: private }),
        (algorithm, length),
        (LinkType::PublicKeyLink, &public_uid),
        CryptographicUsageMask::SIGN,
        now,
    )?;
    let public = new_key(
        &public_uid,
        ObjectType::PublicKey,
        public_attrs,
        ManagedObject::PublicKey(PublicKey { key_block: public }),
        (algorithm, length),
        (LinkType::PrivateKeyLink, &private_uid),
        CryptographicUsageMask::VERIFY,
        now,
    )?;
    Ok((private, public))
}

/// Writes a new pair in the request's transaction and answers both identifiers; the ID
/// Placeholder is the private key's (KMIP 2.1 §6.1.9).
async fn insert_pair(
    req: &mut Request<'_>,
    private: &KeyObject,
    public: &KeyObject,
) -> Result<CreateKeyPairResponse, OpError> {
    req.insert(private).await?;
    req.insert(public).await?;
    req.placeholder = Some(private.uid.clone());
    Ok(CreateKeyPairResponse {
        private_key_unique_identifier: private.uid.clone().into(),
        public_key_unique_identifier: public.uid.clone().into(),
        private_key_attributes: None,
        public_key_attributes: None,
    })
}

/// One key of a new pair: the client's attributes, the server's, its link to the other.
#[allow(clippy::too_many_arguments)]
fn new_key(
    uid: &str,
    object_type: ObjectType,
    client: Attributes,
    object: ManagedObject,
    (algorithm, length): (CryptographicAlgorithm, i32),
    (link_type, linked): (LinkType, &str),
    default_usage: CryptographicUsageMask,
    now: DateTime,
) -> Result<KeyObject, OpError> {
    let mut attrs = new_object_attributes(uid, object_type, Some(&client), now)?;
    attrs.set_typed(Tag::CRYPTOGRAPHIC_ALGORITHM, &algorithm);
    attrs.set_typed(Tag::CRYPTOGRAPHIC_LENGTH, &length);
    if field(attrs.cryptographic_usage_mask())?.is_none() {
        attrs.set_typed(Tag::CRYPTOGRAPHIC_USAGE_MASK, &default_usage);
    }
    attrs.push(Attribute::typed(
        Tag::LINK,
        &Link {
            link_type,
            linked_object_identifier: linked.to_string().into(),
        },
    ));
    maintained::set_on_new_object(&mut attrs, uid, &object, Origin::Generated, now)?;
    Ok(KeyObject {
        uid: uid.to_string(),
        object_type,
        attributes: attrs,
        object: Some(object),
        created_at: now.seconds(),
        version: 0,
    })
}

/// The parameters to sign or verify with: the request's, else the key's Cryptographic
/// Parameters attribute, else the defaults (`asymmetric::sign`).
fn parameters_for(
    requested: &Option<CryptographicParameters>,
    key: &KeyObject,
) -> Result<CryptographicParameters, OpError> {
    if let Some(p) = requested {
        return Ok(p.clone());
    }
    Ok(field(key.attributes.typed(Tag::CRYPTOGRAPHIC_PARAMETERS))?.unwrap_or_default())
}

fn key_block_of<'a>(
    key: &'a KeyObject,
    uid: &str,
    wanted: ObjectType,
) -> Result<&'a KeyBlock, OpError> {
    match (&key.object, wanted) {
        (Some(ManagedObject::PrivateKey(k)), ObjectType::PrivateKey) => Ok(&k.key_block),
        (Some(ManagedObject::PublicKey(k)), ObjectType::PublicKey) => Ok(&k.key_block),
        _ => Err(OpError::new(
            ResultReason::InvalidObjectType,
            format!("object {uid} is not a {}", wanted.name()),
        )),
    }
}

/// Whether a key is a public or private key (Encrypt and Decrypt then mean RSA-OAEP).
pub(super) fn is_asymmetric(key: &KeyObject) -> bool {
    matches!(
        key.object,
        Some(ManagedObject::PublicKey(_) | ManagedObject::PrivateKey(_))
    )
}

/// RSA-OAEP Encrypt with a public key (KMIP 2.1 §6.1.17 with Padding Method OAEP): the
/// request's Cryptographic Parameters, else the key's; a multi-part request or an IV is
/// refused by the caller's checks.
pub(super) fn oaep_encrypt(
    key: &KeyObject,
    uid: &str,
    requested: &Option<CryptographicParameters>,
    plaintext: &[u8],
) -> Result<Vec<u8>, OpError> {
    let block = key_block_of(key, uid, ObjectType::PublicKey)?;
    let params = parameters_for(requested, key)?;
    Ok(asymmetric::oaep_encrypt(block, &params, plaintext)?)
}

/// RSA-OAEP Decrypt with a private key: any ciphertext that does not decrypt is the one
/// Cryptographic Failure, whatever went wrong inside the padding.
pub(super) async fn oaep_decrypt(
    key: &KeyObject,
    uid: &str,
    requested: &Option<CryptographicParameters>,
    ciphertext: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, OpError> {
    let block = key_block_of(key, uid, ObjectType::PrivateKey)?.clone();
    let params = parameters_for(requested, key)?;
    let ciphertext = ciphertext.to_vec();
    off_runtime(move || asymmetric::oaep_decrypt(&block, &params, &ciphertext)).await
}

fn no_digested_data(digested: &Option<ByteString>) -> Result<(), OpError> {
    if digested.is_some() {
        return Err(OpError::new(
            ResultReason::FeatureNotSupported,
            "Digested Data is not supported: send the Data to sign or verify",
        ));
    }
    Ok(())
}

pub(super) async fn sign(
    req: &mut Request<'_>,
    r: &SignRequest,
) -> Result<ResponsePayload, OpError> {
    single_part(&r.correlation_value, r.init_indicator, r.final_indicator)?;
    no_digested_data(&r.digested_data)?;
    let (uid, key) = usable_key(
        req,
        &r.unique_identifier,
        &[State::Active],
        CryptographicUsageMask::SIGN,
        "Sign",
        Purpose::Protect,
    )
    .await?;
    let block = key_block_of(&key, &uid, ObjectType::PrivateKey)?;
    let params = parameters_for(&r.cryptographic_parameters, &key)?;
    let (block, message) = (block.clone(), ByteString::new(data(&r.data)?.to_vec()));
    let signature = off_runtime(move || asymmetric::sign(&block, &params, &message)).await?;
    Ok(ResponsePayload::Sign(SignResponse {
        unique_identifier: uid.into(),
        signature_data: Some(ByteString::new(signature)),
        correlation_value: None,
    }))
}

pub(super) async fn signature_verify(
    req: &mut Request<'_>,
    r: &SignatureVerifyRequest,
) -> Result<ResponsePayload, OpError> {
    single_part(&r.correlation_value, r.init_indicator, r.final_indicator)?;
    no_digested_data(&r.digested_data)?;
    // Verifying is processing protected data: a Deactivated key still verifies what it
    // signed (SP 800-57 "process only"), as a deactivated key still decrypts.
    let (uid, key) = usable_key(
        req,
        &r.unique_identifier,
        &[State::Active, State::Deactivated],
        CryptographicUsageMask::VERIFY,
        "Signature Verify",
        Purpose::Process,
    )
    .await?;
    let block = key_block_of(&key, &uid, ObjectType::PublicKey)?;
    let params = parameters_for(&r.cryptographic_parameters, &key)?;
    let signature = r
        .signature_data
        .as_deref()
        .ok_or_else(|| OpError::new(ResultReason::InvalidMessage, "Signature Data is required"))?;
    let valid = asymmetric::verify(block, &params, data(&r.data)?, signature)?;
    Ok(ResponsePayload::SignatureVerify(SignatureVerifyResponse {
        unique_identifier: uid.into(),
        validity_indicator: Some(if valid {
            ValidityIndicator::Valid
        } else {
            ValidityIndicator::Invalid
        }),
        data: None,
        correlation_value: None,
    }))
}

/// The largest RSA key Register accepts.
const MAX_RSA_BITS: i32 = 8192;

/// Register of a public or private key (its material is not wrapped: Register refuses that
/// for every key block): a key this service can use (RSA, EC P-256/P-384, Ed25519) must decode, and its algorithm and length
/// are set from it (a declared length that disagrees is refused). Other asymmetric keys
/// (DSA, DH, other curves) are kept as registered, with the algorithm and length declared.
pub(super) fn check_registered_key(
    object: &ManagedObject,
    attrs: &mut Attributes,
) -> Result<(), OpError> {
    let block = match object {
        ManagedObject::PublicKey(k) => &k.key_block,
        ManagedObject::PrivateKey(k) => &k.key_block,
        _ => return Ok(()),
    };
    if block.key_value.is_none() {
        return Err(OpError::invalid_field(
            "the key block holds no key material",
        ));
    }
    let declared_algorithm = block
        .cryptographic_algorithm
        .or(field(attrs.cryptographic_algorithm())?);
    let usable = matches!(
        declared_algorithm,
        None | Some(
            CryptographicAlgorithm::Rsa
                | CryptographicAlgorithm::Ec
                | CryptographicAlgorithm::Ecdsa
                | CryptographicAlgorithm::Ed25519
        )
    );
    let measured = match object {
        ManagedObject::PrivateKey(_) => asymmetric::private_length(block),
        _ => asymmetric::public_length(block),
    };
    let declared_length = block
        .cryptographic_length
        .or(field(attrs.cryptographic_length())?);
    match measured {
        Ok((_, bits)) if usable => {
            // Every use of a larger key would cost seconds of a core (RSA private operations
            // grow with the cube of the size); verification stops at 8192 bits too.
            if bits > MAX_RSA_BITS {
                return Err(OpError::invalid_field(format!(
                    "a {bits}-bit key is larger than this service uses ({MAX_RSA_BITS} bits at most)"
                )));
            }
            if declared_length.is_some_and(|d| d != bits) {
                return Err(OpError::invalid_field(format!(
                    "Cryptographic Length does not match the {bits}-bit key"
                )));
            }
            attrs.set_typed(Tag::CRYPTOGRAPHIC_LENGTH, &bits);
        }
        // Declared as a key this service uses, but it does not decode as one.
        Err(e @ asymmetric::AsymError::BadKey(_)) if usable && declared_algorithm.is_some() => {
            return Err(e.into());
        }
        _ => {
            if let Some(length) = declared_length {
                attrs.set_typed(Tag::CRYPTOGRAPHIC_LENGTH, &length);
            }
        }
    }
    if let Some(algorithm) = declared_algorithm {
        attrs.set_typed(Tag::CRYPTOGRAPHIC_ALGORITHM, &algorithm);
    }
    Ok(())
}

/// Register of a certificate: an X.509 certificate must decode as one (DER); its type, the
/// length of its encoding and the parts of its subject and issuer names become its
/// attributes (KMIP 2.1 §4.9-4.13: Certificate Type, Certificate Length, Certificate
/// Subject/Issuer CN, O, OU, ...), which the server keeps and no client changes.
pub(super) fn certificate_attributes(
    c: &kmip::message::Certificate,
    attrs: &mut Attributes,
) -> Result<(), OpError> {
    use der::Decode as _;
    attrs.set_typed(Tag::CERTIFICATE_TYPE, &c.certificate_type);
    attrs.set_typed(Tag::CERTIFICATE_LENGTH, &(c.certificate_value.len() as i32));
    if c.certificate_type != kmip::spec::CertificateType::X509 {
        return Ok(());
    }
    let cert = x509_cert::Certificate::from_der(&c.certificate_value).map_err(|e| {
        OpError::invalid_field(format!(
            "the certificate is not a DER X.509 certificate: {e}"
        ))
    })?;
    let tbs = &cert.tbs_certificate;
    for (name, tags) in [
        (&tbs.subject, &CERTIFICATE_SUBJECT_PARTS),
        (&tbs.issuer, &CERTIFICATE_ISSUER_PARTS),
    ] {
        for rdn in name.0.iter() {
            for atv in rdn.0.iter() {
                let Some(i) = NAME_OIDS.iter().position(|o| *o == atv.oid.to_string()) else {
                    continue;
                };
                // PrintableString, UTF8String and IA5String carry their text as is.
                if let Ok(text) = std::str::from_utf8(atv.value.value()) {
                    attrs.push(Attribute::new(
                        tags[i],
                        kmip::Value::TextString(text.into()),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The name attribute types KMIP 2.1 keeps as certificate attributes, in the order of
/// kmip's [`CERTIFICATE_SUBJECT_PARTS`] and [`CERTIFICATE_ISSUER_PARTS`]: CN, O, OU, email, C, ST, L, UID, serial number,
/// title, DC, DN qualifier.
const NAME_OIDS: [&str; 12] = [
    "2.5.4.3",
    "2.5.4.10",
    "2.5.4.11",
    "1.2.840.113549.1.9.1",
    "2.5.4.6",
    "2.5.4.8",
    "2.5.4.7",
    "0.9.2342.19200300.100.1.1",
    "2.5.4.5",
    "2.5.4.12",
    "0.9.2342.19200300.100.1.25",
    "2.5.4.46",
];

/// A public or private key in the Key Format Type a Get asks for (any other object as it
/// is: the caller asks only for keys).
pub(super) fn key_in(
    object: &ManagedObject,
    format: kmip::spec::KeyFormatType,
) -> Result<ManagedObject, OpError> {
    let convert = |e: asymmetric::AsymError| {
        OpError::new(ResultReason::KeyFormatTypeNotSupported, e.to_string())
    };
    Ok(match object {
        ManagedObject::PrivateKey(k) => ManagedObject::PrivateKey(PrivateKey {
            key_block: asymmetric::private_in(&k.key_block, format).map_err(convert)?,
        }),
        ManagedObject::PublicKey(k) => ManagedObject::PublicKey(PublicKey {
            key_block: asymmetric::public_in(&k.key_block, format).map_err(convert)?,
        }),
        other => other.clone(),
    })
}
