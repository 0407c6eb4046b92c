//! Asymmetric keys: key-pair generation (RSA 2048–4096, EC P-256 / P-384, Ed25519), the Key
//! Format Types each key can be read in, signatures (RSA PKCS#1 v1.5 and PSS, ECDSA,
//! Ed25519) and RSA-OAEP.
//!
//! aws-lc-rs does the cryptography (its RSA is constant-time; the `rsa` crate's private-key
//! operations carry RUSTSEC-2023-0071, unfixed). RustCrypto's DER crates read and write the
//! encodings: PKCS#1 (`RSAPrivateKey`, `RSAPublicKey`), PKCS#8, X.509 `SubjectPublicKeyInfo`,
//! SEC1 `ECPrivateKey`, and the KMIP Transparent structures built from their fields.
//!
//! ```text
//!            private key                         public key
//! RSA   PKCS#1* ⇄ PKCS#8 ⇄ Transparent RSA   PKCS#1* ⇄ X.509 ⇄ Transparent RSA
//! EC    PKCS#8* ⇄ EC Private Key ⇄ Transp. EC   X.509* ⇄ Transparent EC
//! Ed25519  PKCS#8*                             X.509*
//! (* the format a generated key is kept in; a registered key is kept as registered)
//! ```
//!
//! Private key bytes are held in `Zeroizing` buffers here; the Transparent structures carry
//! them as TTLV Big Integers, which are not zeroized (docs/kmip.md, limits).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{
    KeyPair as RsaKeyPair, KeySize, OaepAlgorithm, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, UintRef};
use der::{Decode, Encode};
use kmip::message::{ByteString, CryptographicParameters, KeyBlock, KeyMaterial, KeyValue};
use kmip::spec::{
    CryptographicAlgorithm, DigitalSignatureAlgorithm, HashingAlgorithm, KeyFormatType,
    MaskGenerator, PaddingMethod, RecommendedCurve,
};
use kmip::{Item, Tag, Value};
use zeroize::Zeroizing;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Why an asymmetric operation was refused or failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AsymError {
    /// The request asks for something this service does not do (a key size, curve, hash,
    /// padding or algorithm): Invalid Field.
    #[error("{0}")]
    Unsupported(String),
    /// The key cannot be given in the asked Key Format Type.
    #[error("{0}")]
    Format(String),
    /// The key material does not decode as the key it claims to be.
    #[error("the key material is not a valid {0} key")]
    BadKey(&'static str),
    /// The operation failed (a ciphertext that does not decrypt, a message too long).
    #[error("{0}")]
    Failed(&'static str),
}

/// A curve this service generates and uses keys on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    fn oid(self) -> ObjectIdentifier {
        match self {
            Self::P256 => SECP256R1,
            Self::P384 => SECP384R1,
        }
    }

    fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        match oid {
            SECP256R1 => Some(Self::P256),
            SECP384R1 => Some(Self::P384),
            _ => None,
        }
    }

    fn recommended(self) -> RecommendedCurve {
        match self {
            Self::P256 => RecommendedCurve::P256,
            Self::P384 => RecommendedCurve::P384,
        }
    }

    fn from_recommended(c: RecommendedCurve) -> Option<Self> {
        match c {
            RecommendedCurve::P256 => Some(Self::P256),
            RecommendedCurve::P384 => Some(Self::P384),
            _ => None,
        }
    }

    /// The curve of a key length in bits (256, 384).
    pub fn from_bits(bits: i32) -> Option<Self> {
        match bits {
            256 => Some(Self::P256),
            384 => Some(Self::P384),
            _ => None,
        }
    }

    pub fn bits(self) -> i32 {
        match self {
            Self::P256 => 256,
            Self::P384 => 384,
        }
    }

    /// The signing algorithm: each curve with its own hash (SHA-256 for P-256, SHA-384 for
    /// P-384, FIPS 186-5 / SP 800-57's pairing), which is what aws-lc-rs signs with.
    fn signing(self, hash: Option<HashingAlgorithm>) -> Result<Ecdsa, AsymError> {
        use signature as s;
        Ok(match (self, hash) {
            (Self::P256, None | Some(HashingAlgorithm::Sha256)) => Ecdsa {
                sign: &s::ECDSA_P256_SHA256_ASN1_SIGNING,
                verify: &s::ECDSA_P256_SHA256_ASN1,
            },
            (Self::P384, None | Some(HashingAlgorithm::Sha384)) => Ecdsa {
                sign: &s::ECDSA_P384_SHA384_ASN1_SIGNING,
                verify: &s::ECDSA_P384_SHA384_ASN1,
            },
            (_, Some(h)) => {
                return Err(AsymError::Unsupported(format!(
                    "ECDSA on P-{} signs with SHA-{}, not {}",
                    self.bits(),
                    self.bits(),
                    h.name()
                )))
            }
        })
    }
}

struct Ecdsa {
    sign: &'static signature::EcdsaSigningAlgorithm,
    verify: &'static signature::EcdsaVerificationAlgorithm,
}

/// What kind of asymmetric key a key block holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    Ec(Curve),
    Ed25519,
}

/// A generated key pair: each key block in the format it is kept in, and the key's length
/// in bits (the modulus for RSA, the curve's size for EC, 256 for Ed25519).
#[derive(Debug)]
pub struct GeneratedPair {
    pub private: KeyBlock,
    pub public: KeyBlock,
    pub algorithm: CryptographicAlgorithm,
    pub length: i32,
}

/// Generates a key pair. `length` is the RSA modulus (2048, 3072, 4096) or the EC key size
/// (256, 384) when no curve is named. Slow for RSA (tens to hundreds of milliseconds): the
/// caller runs it off the request path.
pub fn generate(
    algorithm: CryptographicAlgorithm,
    length: Option<i32>,
    curve: Option<RecommendedCurve>,
) -> Result<GeneratedPair, AsymError> {
    match algorithm {
        CryptographicAlgorithm::Rsa => {
            let size = match length {
                Some(2048) => KeySize::Rsa2048,
                Some(3072) => KeySize::Rsa3072,
                Some(4096) => KeySize::Rsa4096,
                Some(other) => {
                    return Err(AsymError::Unsupported(format!(
                        "RSA keys are 2048, 3072 or 4096 bits, not {other}"
                    )))
                }
                None => {
                    return Err(AsymError::Unsupported(
                        "Cryptographic Length is required for an RSA key pair".into(),
                    ))
                }
            };
            let pair = RsaKeyPair::generate(size)
                .map_err(|_| AsymError::Failed("RSA key generation failed"))?;
            let pkcs8 = pair
                .as_der()
                .map_err(|_| AsymError::Failed("RSA key encoding failed"))?;
            let info = pkcs8::PrivateKeyInfo::try_from(pkcs8.as_ref())
                .map_err(|_| AsymError::BadKey("RSA"))?;
            let pkcs1 = Zeroizing::new(info.private_key.to_vec());
            let (public, bits) = rsa_public_pkcs1(&pkcs1)?;
            Ok(GeneratedPair {
                private: block(KeyFormatType::Pkcs1, pkcs1.to_vec(), algorithm, bits),
                public: block(KeyFormatType::Pkcs1, public, algorithm, bits),
                algorithm,
                length: bits,
            })
        }
        CryptographicAlgorithm::Ec | CryptographicAlgorithm::Ecdsa => {
            let curve = match curve {
                Some(c) => Curve::from_recommended(c).ok_or_else(|| {
                    AsymError::Unsupported(format!(
                        "EC keys are on P-256 or P-384, not {}",
                        c.name()
                    ))
                })?,
                None => length.and_then(Curve::from_bits).ok_or_else(|| {
                    AsymError::Unsupported(
                        "an EC key pair needs Recommended Curve P-256 or P-384 (or a length of 256 or 384)"
                            .into(),
                    )
                })?,
            };
            let pair = EcdsaKeyPair::generate(curve.signing(None)?.sign)
                .map_err(|_| AsymError::Failed("EC key generation failed"))?;
            let pkcs8 = pair
                .to_pkcs8v1()
                .map_err(|_| AsymError::Failed("EC key encoding failed"))?;
            let public = ec_spki(curve, pair.public_key().as_ref())?;
            Ok(GeneratedPair {
                private: block(
                    KeyFormatType::Pkcs8,
                    pkcs8.as_ref().to_vec(),
                    algorithm,
                    curve.bits(),
                ),
                public: block(KeyFormatType::X509, public, algorithm, curve.bits()),
                algorithm,
                length: curve.bits(),
            })
        }
        CryptographicAlgorithm::Ed25519 => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| AsymError::Failed("Ed25519 key generation failed"))?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| AsymError::BadKey("Ed25519"))?;
            let public = spki(ED25519, None, pair.public_key().as_ref())?;
            Ok(GeneratedPair {
                private: block(
                    KeyFormatType::Pkcs8,
                    pkcs8.as_ref().to_vec(),
                    algorithm,
                    256,
                ),
                public: block(KeyFormatType::X509, public, algorithm, 256),
                algorithm,
                length: 256,
            })
        }
        other => Err(AsymError::Unsupported(format!(
            "key pairs are RSA, EC (ECDSA) or Ed25519, not {}",
            other.name()
        ))),
    }
}

fn block(
    format: KeyFormatType,
    bytes: Vec<u8>,
    algorithm: CryptographicAlgorithm,
    bits: i32,
) -> KeyBlock {
    KeyBlock {
        key_format_type: format,
        ..KeyBlock::raw(bytes, Some(algorithm), Some(bits))
    }
}

fn unsupported_hash(h: HashingAlgorithm) -> AsymError {
    AsymError::Unsupported(format!(
        "hashing algorithm {} is not supported here (SHA-256, SHA-384, SHA-512)",
        h.name()
    ))
}

// ------------------------------------------------------------------ encodings

/// Unsigned big-endian bytes → a TTLV Big Integer (two's complement: a leading zero byte
/// when the top bit is set).
fn big_integer(tag: Tag, unsigned: &[u8]) -> Item {
    let trimmed = strip_zeros(unsigned);
    let mut v = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        v.push(0);
    }
    v.extend_from_slice(trimmed);
    Item::new(tag, Value::BigInteger(v))
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

/// The field `tag` of a Transparent structure: a Big Integer (not negative), as unsigned
/// big-endian bytes without leading zeros. Registered keys may also give an Integer.
fn field_uint<'a>(items: &'a [Item], tag: Tag, what: &'static str) -> Result<&'a [u8], AsymError> {
    let item = items
        .iter()
        .find(|i| i.tag == tag)
        .ok_or(AsymError::BadKey(what))?;
    match &item.value {
        Value::BigInteger(b) if b.first().is_none_or(|x| x & 0x80 == 0) => Ok(strip_zeros(b)),
        _ => Err(AsymError::BadKey(what)),
    }
}

fn uint<'a>(bytes: &'a [u8], what: &'static str) -> Result<UintRef<'a>, AsymError> {
    UintRef::new(bytes).map_err(|_| AsymError::BadKey(what))
}

fn der_of<T: Encode>(value: &T, what: &'static str) -> Result<Vec<u8>, AsymError> {
    value.to_der().map_err(|_| AsymError::BadKey(what))
}

/// The AlgorithmIdentifier of a key: rsaEncryption with NULL parameters, id-ecPublicKey
/// with its named curve, Ed25519 with none (RFC 3279, RFC 5480, RFC 8410).
fn algorithm_identifier(
    algorithm: ObjectIdentifier,
    curve: Option<&ObjectIdentifier>,
) -> spki::AlgorithmIdentifierRef<'_> {
    let parameters = match curve {
        Some(oid) => Some(AnyRef::from(oid)),
        None if algorithm == RSA_ENCRYPTION => Some(AnyRef::NULL),
        None => None,
    };
    spki::AlgorithmIdentifierRef {
        oid: algorithm,
        parameters,
    }
}

fn spki(
    algorithm: ObjectIdentifier,
    curve: Option<ObjectIdentifier>,
    key: &[u8],
) -> Result<Vec<u8>, AsymError> {
    let info = spki::SubjectPublicKeyInfoRef {
        algorithm: algorithm_identifier(algorithm, curve.as_ref()),
        subject_public_key: BitStringRef::from_bytes(key)
            .map_err(|_| AsymError::BadKey("public"))?,
    };
    der_of(&info, "public")
}

fn ec_spki(curve: Curve, point: &[u8]) -> Result<Vec<u8>, AsymError> {
    spki(EC_PUBLIC_KEY, Some(curve.oid()), point)
}

fn pkcs8_of(
    algorithm: ObjectIdentifier,
    curve: Option<ObjectIdentifier>,
    key: &[u8],
) -> Result<Zeroizing<Vec<u8>>, AsymError> {
    let info = pkcs8::PrivateKeyInfo::new(algorithm_identifier(algorithm, curve.as_ref()), key);
    der_of(&info, "private").map(Zeroizing::new)
}

/// An RSA private key's (PKCS#1) public key, PKCS#1 `RSAPublicKey`, and its modulus size.
fn rsa_public_pkcs1(private_pkcs1: &[u8]) -> Result<(Vec<u8>, i32), AsymError> {
    let key =
        pkcs1::RsaPrivateKey::from_der(private_pkcs1).map_err(|_| AsymError::BadKey("RSA"))?;
    Ok((
        der_of(&key.public_key(), "RSA")?,
        modulus_bits(key.modulus.as_bytes()),
    ))
}

fn modulus_bits(n: &[u8]) -> i32 {
    let n = strip_zeros(n);
    match n.first() {
        Some(top) => (n.len() * 8) as i32 - top.leading_zeros() as i32,
        None => 0,
    }
}

/// The key bytes of a block holding a byte string (every format but the Transparent ones).
fn bytes_of(block: &KeyBlock) -> Option<&[u8]> {
    match &block.key_value {
        Some(KeyValue::Plain {
            key_material: KeyMaterial::Bytes(b),
            ..
        }) => Some(b),
        _ => None,
    }
}

fn structure_of(block: &KeyBlock) -> Option<&[Item]> {
    match &block.key_value {
        Some(KeyValue::Plain {
            key_material: KeyMaterial::Structure(items),
            ..
        }) => Some(items),
        _ => None,
    }
}

/// A private key in canonical form: RSA as PKCS#1 `RSAPrivateKey`, EC and Ed25519 as
/// PKCS#8.
struct Private {
    kind: KeyKind,
    der: Zeroizing<Vec<u8>>,
}

/// A public key in canonical form: RSA as PKCS#1 `RSAPublicKey`, EC as the uncompressed
/// point, Ed25519 as its 32 bytes.
struct Public {
    kind: KeyKind,
    key: Vec<u8>,
}

fn is_rsa(algorithm: Option<CryptographicAlgorithm>) -> bool {
    algorithm == Some(CryptographicAlgorithm::Rsa)
}

fn private_of(block: &KeyBlock) -> Result<Private, AsymError> {
    let algorithm = block.cryptographic_algorithm;
    match block.key_format_type {
        KeyFormatType::Pkcs1 | KeyFormatType::Raw if is_rsa(algorithm) || algorithm.is_none() => {
            let der = bytes_of(block).ok_or(AsymError::BadKey("RSA"))?;
            pkcs1::RsaPrivateKey::from_der(der).map_err(|_| AsymError::BadKey("RSA"))?;
            Ok(Private {
                kind: KeyKind::Rsa,
                der: Zeroizing::new(der.to_vec()),
            })
        }
        KeyFormatType::Pkcs8 => {
            let der = bytes_of(block).ok_or(AsymError::BadKey("PKCS#8"))?;
            let info =
                pkcs8::PrivateKeyInfo::try_from(der).map_err(|_| AsymError::BadKey("PKCS#8"))?;
            match info.algorithm.oid {
                RSA_ENCRYPTION => Ok(Private {
                    kind: KeyKind::Rsa,
                    der: Zeroizing::new(info.private_key.to_vec()),
                }),
                EC_PUBLIC_KEY => {
                    let curve = info
                        .algorithm
                        .parameters_oid()
                        .ok()
                        .and_then(Curve::from_oid)
                        .ok_or_else(|| {
                            AsymError::Unsupported(
                                "only P-256 and P-384 EC keys are supported".into(),
                            )
                        })?;
                    Ok(Private {
                        kind: KeyKind::Ec(curve),
                        der: Zeroizing::new(der.to_vec()),
                    })
                }
                ED25519 => Ok(Private {
                    kind: KeyKind::Ed25519,
                    der: Zeroizing::new(der.to_vec()),
                }),
                _ => Err(AsymError::Unsupported(
                    "PKCS#8 key of an unsupported algorithm".into(),
                )),
            }
        }
        KeyFormatType::EcPrivateKey => {
            let der = bytes_of(block).ok_or(AsymError::BadKey("EC"))?;
            let key = sec1::EcPrivateKey::from_der(der).map_err(|_| AsymError::BadKey("EC"))?;
            let curve = key
                .parameters
                .and_then(|p| p.named_curve())
                .and_then(Curve::from_oid)
                .ok_or_else(|| {
                    AsymError::Unsupported(
                        "only named P-256 and P-384 EC keys are supported".into(),
                    )
                })?;
            ec_private_from_sec1(curve, der)
        }
        KeyFormatType::TransparentRsaPrivateKey => {
            let items = structure_of(block).ok_or(AsymError::BadKey("RSA"))?;
            let f = |tag| field_uint(items, tag, "Transparent RSA");
            let n = f(Tag::MODULUS)?;
            let e = f(Tag::PUBLIC_EXPONENT)?;
            let d = f(Tag::PRIVATE_EXPONENT)?;
            let p = f(Tag::P)?;
            let q = f(Tag::Q)?;
            let dp = f(Tag::PRIME_EXPONENT_P)?;
            let dq = f(Tag::PRIME_EXPONENT_Q)?;
            let qinv = f(Tag::CRT_COEFFICIENT)?;
            let u = |b| uint(b, "Transparent RSA");
            let key = pkcs1::RsaPrivateKey {
                modulus: u(n)?,
                public_exponent: u(e)?,
                private_exponent: u(d)?,
                prime1: u(p)?,
                prime2: u(q)?,
                exponent1: u(dp)?,
                exponent2: u(dq)?,
                coefficient: u(qinv)?,
                other_prime_infos: None,
            };
            Ok(Private {
                kind: KeyKind::Rsa,
                der: Zeroizing::new(der_of(&key, "Transparent RSA")?),
            })
        }
        KeyFormatType::TransparentEcPrivateKey | KeyFormatType::TransparentEcdsaPrivateKey => {
            let items = structure_of(block).ok_or(AsymError::BadKey("Transparent EC"))?;
            let curve = transparent_curve(items)?;
            let d = field_uint(items, Tag::D, "Transparent EC")?;
            let size = (curve.bits() / 8) as usize;
            if d.len() > size {
                return Err(AsymError::BadKey("Transparent EC"));
            }
            let mut scalar = Zeroizing::new(vec![0u8; size - d.len()]);
            scalar.extend_from_slice(d);
            let sec1_key = sec1::EcPrivateKey {
                private_key: &scalar,
                parameters: Some(sec1::EcParameters::NamedCurve(curve.oid())),
                public_key: None,
            };
            let der = Zeroizing::new(der_of(&sec1_key, "Transparent EC")?);
            ec_private_from_sec1(curve, &der)
        }
        other => Err(AsymError::Format(format!(
            "a private key in {} is not supported for cryptographic operations",
            other.name()
        ))),
    }
}

fn ec_private_from_sec1(curve: Curve, der: &[u8]) -> Result<Private, AsymError> {
    let pair = EcdsaKeyPair::from_private_key_der(curve.signing(None)?.sign, der)
        .map_err(|_| AsymError::BadKey("EC"))?;
    let pkcs8 = pair.to_pkcs8v1().map_err(|_| AsymError::BadKey("EC"))?;
    Ok(Private {
        kind: KeyKind::Ec(curve),
        der: Zeroizing::new(pkcs8.as_ref().to_vec()),
    })
}

fn transparent_curve(items: &[Item]) -> Result<Curve, AsymError> {
    let raw = items
        .iter()
        .find(|i| i.tag == Tag::RECOMMENDED_CURVE)
        .and_then(|i| match i.value {
            Value::Enumeration(v) => RecommendedCurve::from_value(v),
            _ => None,
        })
        .ok_or(AsymError::BadKey("Transparent EC"))?;
    Curve::from_recommended(raw)
        .ok_or_else(|| AsymError::Unsupported(format!("curve {} is not supported", raw.name())))
}

fn public_of(block: &KeyBlock) -> Result<Public, AsymError> {
    let algorithm = block.cryptographic_algorithm;
    match block.key_format_type {
        KeyFormatType::Pkcs1 | KeyFormatType::Raw if is_rsa(algorithm) || algorithm.is_none() => {
            let der = bytes_of(block).ok_or(AsymError::BadKey("RSA"))?;
            pkcs1::RsaPublicKey::from_der(der).map_err(|_| AsymError::BadKey("RSA"))?;
            Ok(Public {
                kind: KeyKind::Rsa,
                key: der.to_vec(),
            })
        }
        KeyFormatType::X509 => {
            let der = bytes_of(block).ok_or(AsymError::BadKey("X.509"))?;
            let info = spki::SubjectPublicKeyInfoRef::try_from(der)
                .map_err(|_| AsymError::BadKey("X.509"))?;
            let key = info
                .subject_public_key
                .as_bytes()
                .ok_or(AsymError::BadKey("X.509"))?
                .to_vec();
            let kind = match info.algorithm.oid {
                RSA_ENCRYPTION => KeyKind::Rsa,
                EC_PUBLIC_KEY => KeyKind::Ec(
                    info.algorithm
                        .parameters_oid()
                        .ok()
                        .and_then(Curve::from_oid)
                        .ok_or_else(|| {
                            AsymError::Unsupported(
                                "only P-256 and P-384 EC keys are supported".into(),
                            )
                        })?,
                ),
                ED25519 => KeyKind::Ed25519,
                _ => {
                    return Err(AsymError::Unsupported(
                        "public key of an unsupported algorithm".into(),
                    ))
                }
            };
            Ok(Public { kind, key })
        }
        KeyFormatType::TransparentRsaPublicKey => {
            let items = structure_of(block).ok_or(AsymError::BadKey("Transparent RSA"))?;
            let n = field_uint(items, Tag::MODULUS, "Transparent RSA")?;
            let e = field_uint(items, Tag::PUBLIC_EXPONENT, "Transparent RSA")?;
            let key = pkcs1::RsaPublicKey {
                modulus: uint(n, "Transparent RSA")?,
                public_exponent: uint(e, "Transparent RSA")?,
            };
            Ok(Public {
                kind: KeyKind::Rsa,
                key: der_of(&key, "Transparent RSA")?,
            })
        }
        KeyFormatType::TransparentEcPublicKey | KeyFormatType::TransparentEcdsaPublicKey => {
            let items = structure_of(block).ok_or(AsymError::BadKey("Transparent EC"))?;
            let curve = transparent_curve(items)?;
            let q = items
                .iter()
                .find(|i| i.tag == Tag::Q_STRING)
                .and_then(|i| match &i.value {
                    Value::ByteString(b) => Some(b.to_vec()),
                    _ => None,
                })
                .ok_or(AsymError::BadKey("Transparent EC"))?;
            Ok(Public {
                kind: KeyKind::Ec(curve),
                key: q,
            })
        }
        other => Err(AsymError::Format(format!(
            "a public key in {} is not supported for cryptographic operations",
            other.name()
        ))),
    }
}

fn material(format: KeyFormatType, source: &KeyBlock, material: KeyMaterial) -> KeyBlock {
    KeyBlock {
        key_format_type: format,
        key_compression_type: None,
        key_value: Some(KeyValue::Plain {
            key_material: material,
            attributes: None,
        }),
        key_wrapping_data: None,
        ..source.clone()
    }
}

fn format_error(kind: &str, format: KeyFormatType, offered: &str) -> AsymError {
    AsymError::Format(format!(
        "{kind} keys are available as {offered}, not {}",
        format.name()
    ))
}

/// A private key block in the Key Format Type asked for (the key as kept when it already
/// is in that format).
pub fn private_in(block: &KeyBlock, format: KeyFormatType) -> Result<KeyBlock, AsymError> {
    if block.key_format_type == format {
        return Ok(block.clone());
    }
    let key = private_of(block)?;
    let bytes = |b: Zeroizing<Vec<u8>>| KeyMaterial::Bytes(ByteString(b));
    let out = match (key.kind, format) {
        (KeyKind::Rsa, KeyFormatType::Pkcs1) => bytes(key.der),
        (KeyKind::Rsa, KeyFormatType::Pkcs8) => bytes(pkcs8_of(RSA_ENCRYPTION, None, &key.der)?),
        (KeyKind::Rsa, KeyFormatType::TransparentRsaPrivateKey) => {
            let k =
                pkcs1::RsaPrivateKey::from_der(&key.der).map_err(|_| AsymError::BadKey("RSA"))?;
            KeyMaterial::Structure(vec![
                big_integer(Tag::MODULUS, k.modulus.as_bytes()),
                big_integer(Tag::PRIVATE_EXPONENT, k.private_exponent.as_bytes()),
                big_integer(Tag::PUBLIC_EXPONENT, k.public_exponent.as_bytes()),
                big_integer(Tag::P, k.prime1.as_bytes()),
                big_integer(Tag::Q, k.prime2.as_bytes()),
                big_integer(Tag::PRIME_EXPONENT_P, k.exponent1.as_bytes()),
                big_integer(Tag::PRIME_EXPONENT_Q, k.exponent2.as_bytes()),
                big_integer(Tag::CRT_COEFFICIENT, k.coefficient.as_bytes()),
            ])
        }
        (KeyKind::Rsa, f) => {
            return Err(format_error(
                "RSA private",
                f,
                "PKCS#1, PKCS#8 or Transparent RSA Private Key",
            ))
        }
        (KeyKind::Ec(curve), f) => {
            let info = pkcs8::PrivateKeyInfo::try_from(key.der.as_slice())
                .map_err(|_| AsymError::BadKey("EC"))?;
            match f {
                KeyFormatType::Pkcs8 => bytes(key.der.clone()),
                KeyFormatType::EcPrivateKey => {
                    // PKCS#8 carries the SEC1 structure; give it its curve, as RFC 5915 asks.
                    let inner = sec1::EcPrivateKey::from_der(info.private_key)
                        .map_err(|_| AsymError::BadKey("EC"))?;
                    let named = sec1::EcPrivateKey {
                        parameters: Some(sec1::EcParameters::NamedCurve(curve.oid())),
                        ..inner
                    };
                    bytes(Zeroizing::new(der_of(&named, "EC")?))
                }
                KeyFormatType::TransparentEcPrivateKey => {
                    let inner = sec1::EcPrivateKey::from_der(info.private_key)
                        .map_err(|_| AsymError::BadKey("EC"))?;
                    KeyMaterial::Structure(vec![
                        Item::enumeration(Tag::RECOMMENDED_CURVE, curve.recommended().value()),
                        big_integer(Tag::D, inner.private_key),
                    ])
                }
                f => {
                    return Err(format_error(
                        "EC private",
                        f,
                        "PKCS#8, EC Private Key or Transparent EC Private Key",
                    ))
                }
            }
        }
        (KeyKind::Ed25519, f) => return Err(format_error("Ed25519 private", f, "PKCS#8")),
    };
    Ok(material(format, block, out))
}

/// A public key block in the Key Format Type asked for.
pub fn public_in(block: &KeyBlock, format: KeyFormatType) -> Result<KeyBlock, AsymError> {
    if block.key_format_type == format {
        return Ok(block.clone());
    }
    let key = public_of(block)?;
    let bytes = |b: Vec<u8>| KeyMaterial::Bytes(ByteString::new(b));
    let out = match (key.kind, format) {
        (KeyKind::Rsa, KeyFormatType::Pkcs1) => bytes(key.key),
        (KeyKind::Rsa, KeyFormatType::X509) => bytes(spki(RSA_ENCRYPTION, None, &key.key)?),
        (KeyKind::Rsa, KeyFormatType::TransparentRsaPublicKey) => {
            let k =
                pkcs1::RsaPublicKey::from_der(&key.key).map_err(|_| AsymError::BadKey("RSA"))?;
            KeyMaterial::Structure(vec![
                big_integer(Tag::MODULUS, k.modulus.as_bytes()),
                big_integer(Tag::PUBLIC_EXPONENT, k.public_exponent.as_bytes()),
            ])
        }
        (KeyKind::Rsa, f) => {
            return Err(format_error(
                "RSA public",
                f,
                "PKCS#1, X.509 or Transparent RSA Public Key",
            ))
        }
        (KeyKind::Ec(curve), KeyFormatType::X509) => bytes(ec_spki(curve, &key.key)?),
        (KeyKind::Ec(curve), KeyFormatType::TransparentEcPublicKey) => {
            KeyMaterial::Structure(vec![
                Item::enumeration(Tag::RECOMMENDED_CURVE, curve.recommended().value()),
                Item::bytes(Tag::Q_STRING, key.key),
            ])
        }
        (KeyKind::Ec(_), f) => {
            return Err(format_error(
                "EC public",
                f,
                "X.509 or Transparent EC Public Key",
            ))
        }
        (KeyKind::Ed25519, KeyFormatType::X509) => bytes(spki(ED25519, None, &key.key)?),
        (KeyKind::Ed25519, f) => return Err(format_error("Ed25519 public", f, "X.509")),
    };
    Ok(material(format, block, out))
}

/// The length in bits of an asymmetric key (RSA modulus, curve size), for Register.
pub fn private_length(block: &KeyBlock) -> Result<(KeyKind, i32), AsymError> {
    let key = private_of(block)?;
    Ok(match key.kind {
        KeyKind::Rsa => {
            let k =
                pkcs1::RsaPrivateKey::from_der(&key.der).map_err(|_| AsymError::BadKey("RSA"))?;
            (key.kind, modulus_bits(k.modulus.as_bytes()))
        }
        KeyKind::Ec(c) => (key.kind, c.bits()),
        KeyKind::Ed25519 => (key.kind, 256),
    })
}

pub fn public_length(block: &KeyBlock) -> Result<(KeyKind, i32), AsymError> {
    let key = public_of(block)?;
    Ok(match key.kind {
        KeyKind::Rsa => {
            let k =
                pkcs1::RsaPublicKey::from_der(&key.key).map_err(|_| AsymError::BadKey("RSA"))?;
            (key.kind, modulus_bits(k.modulus.as_bytes()))
        }
        KeyKind::Ec(c) => (key.kind, c.bits()),
        KeyKind::Ed25519 => (key.kind, 256),
    })
}

// ------------------------------------------------------------------ signatures

/// How to sign: RSA PKCS#1 v1.5 or PSS with a hash, ECDSA with a hash, or Ed25519.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    RsaPkcs1(HashingAlgorithm),
    /// PSS with MGF1 of the same hash; the salt length asked for, if any.
    RsaPss(HashingAlgorithm, Option<i32>),
    Ecdsa(Option<HashingAlgorithm>),
    Ed25519,
}

/// The signature scheme from the request's Cryptographic Parameters (Digital Signature
/// Algorithm, or Cryptographic Algorithm + Padding Method + Hashing Algorithm) and the key.
/// Defaults: RSA PKCS#1 v1.5 with SHA-256; ECDSA with the curve's hash.
fn scheme(kind: KeyKind, p: &CryptographicParameters) -> Result<Scheme, AsymError> {
    use DigitalSignatureAlgorithm as D;
    let from_dsa = p.digital_signature_algorithm.map(|d| match d {
        D::Sha256WithRsaEncryption => Ok((
            Some(KeyKind::Rsa),
            Some(PaddingMethod::Pkcs1V1_5),
            Some(HashingAlgorithm::Sha256),
        )),
        D::Sha384WithRsaEncryption => Ok((
            Some(KeyKind::Rsa),
            Some(PaddingMethod::Pkcs1V1_5),
            Some(HashingAlgorithm::Sha384),
        )),
        D::Sha512WithRsaEncryption => Ok((
            Some(KeyKind::Rsa),
            Some(PaddingMethod::Pkcs1V1_5),
            Some(HashingAlgorithm::Sha512),
        )),
        D::RsassaPss => Ok((Some(KeyKind::Rsa), Some(PaddingMethod::Pss), None)),
        D::EcdsaWithSha256 => Ok((None, None, Some(HashingAlgorithm::Sha256))),
        D::EcdsaWithSha384 => Ok((None, None, Some(HashingAlgorithm::Sha384))),
        D::EcdsaWithSha512 => Ok((None, None, Some(HashingAlgorithm::Sha512))),
        other => Err(AsymError::Unsupported(format!(
            "digital signature algorithm {} is not supported",
            other.name()
        ))),
    });
    let (dsa_kind, dsa_padding, dsa_hash) = from_dsa.transpose()?.unwrap_or((None, None, None));
    let hash = p.hashing_algorithm.or(dsa_hash);
    let padding = p.padding_method.or(dsa_padding);
    if let Some(a) = p.cryptographic_algorithm {
        let fits = matches!(
            (a, kind),
            (CryptographicAlgorithm::Rsa, KeyKind::Rsa)
                | (
                    CryptographicAlgorithm::Ecdsa | CryptographicAlgorithm::Ec,
                    KeyKind::Ec(_)
                )
                | (CryptographicAlgorithm::Ed25519, KeyKind::Ed25519)
        );
        if !fits {
            return Err(AsymError::Unsupported(format!(
                "Cryptographic Algorithm {} does not match the key",
                a.name()
            )));
        }
    }
    match kind {
        KeyKind::Rsa => {
            if dsa_kind.is_none() && p.digital_signature_algorithm.is_some() {
                return Err(AsymError::Unsupported(
                    "an ECDSA signature algorithm with an RSA key".into(),
                ));
            }
            let hash = hash.unwrap_or(HashingAlgorithm::Sha256);
            match padding {
                None | Some(PaddingMethod::Pkcs1V1_5) => Ok(Scheme::RsaPkcs1(hash)),
                Some(PaddingMethod::Pss) => {
                    if p.mask_generator.is_some_and(|m| m != MaskGenerator::Mgf1)
                        || p.mask_generator_hashing_algorithm
                            .is_some_and(|m| m != hash)
                    {
                        return Err(AsymError::Unsupported(
                            "PSS takes MGF1 with the message's hash".into(),
                        ));
                    }
                    Ok(Scheme::RsaPss(hash, p.salt_length))
                }
                Some(other) => Err(AsymError::Unsupported(format!(
                    "padding method {} does not sign (PKCS1 v1.5 or PSS)",
                    other.name()
                ))),
            }
        }
        KeyKind::Ec(_) => {
            if dsa_kind == Some(KeyKind::Rsa) || padding.is_some_and(|m| m != PaddingMethod::None) {
                return Err(AsymError::Unsupported(
                    "an RSA signature scheme with an EC key".into(),
                ));
            }
            Ok(Scheme::Ecdsa(hash))
        }
        KeyKind::Ed25519 => {
            if p.digital_signature_algorithm.is_some()
                || padding.is_some_and(|m| m != PaddingMethod::None)
                || hash.is_some_and(|h| h != HashingAlgorithm::Sha512)
            {
                return Err(AsymError::Unsupported(
                    "Ed25519 takes no hash, padding or other signature algorithm".into(),
                ));
            }
            Ok(Scheme::Ed25519)
        }
    }
}

fn hash_len(h: HashingAlgorithm) -> usize {
    match h {
        HashingAlgorithm::Sha384 => 48,
        HashingAlgorithm::Sha512 => 64,
        _ => 32,
    }
}

/// PSS salt lengths: the hash's length (RFC 8017's usual choice) or the largest the key
/// allows (emLen - hLen - 2, what several KMIP servers and test cases use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Salt {
    Digest,
    Max,
}

/// The salt a PSS request asks for, given the key's modulus in bits: none or the hash's
/// length → Digest; the maximum for this key → Max; anything else is refused.
fn pss_salt(
    hash: HashingAlgorithm,
    asked: Option<i32>,
    modulus_bits: i32,
) -> Result<Salt, AsymError> {
    let em_len = (modulus_bits + 6) / 8;
    let max = em_len - hash_len(hash) as i32 - 2;
    match asked {
        None => Ok(Salt::Digest),
        Some(s) if s == hash_len(hash) as i32 => Ok(Salt::Digest),
        Some(s) if s == max => Ok(Salt::Max),
        Some(s) => Err(AsymError::Unsupported(format!(
            "PSS salt length {s} is not supported: the hash's length ({}) or the key's maximum ({max})",
            hash_len(hash)
        ))),
    }
}

fn rsa_signing(
    scheme: Scheme,
    modulus_bits: i32,
) -> Result<&'static signature::RsaSignatureEncoding, AsymError> {
    use signature as s;
    use signature::RsaPssSaltLength::Max;
    static PSS_SHA256_MAX: s::RsaSignatureEncoding = s::RSA_PSS_SHA256.with_pss_salt_length(Max);
    static PSS_SHA384_MAX: s::RsaSignatureEncoding = s::RSA_PSS_SHA384.with_pss_salt_length(Max);
    static PSS_SHA512_MAX: s::RsaSignatureEncoding = s::RSA_PSS_SHA512.with_pss_salt_length(Max);
    Ok(match scheme {
        Scheme::RsaPkcs1(HashingAlgorithm::Sha256) => &s::RSA_PKCS1_SHA256,
        Scheme::RsaPkcs1(HashingAlgorithm::Sha384) => &s::RSA_PKCS1_SHA384,
        Scheme::RsaPkcs1(HashingAlgorithm::Sha512) => &s::RSA_PKCS1_SHA512,
        Scheme::RsaPss(h, asked) => match (h, pss_salt(h, asked, modulus_bits)?) {
            (HashingAlgorithm::Sha256, Salt::Digest) => &s::RSA_PSS_SHA256,
            (HashingAlgorithm::Sha384, Salt::Digest) => &s::RSA_PSS_SHA384,
            (HashingAlgorithm::Sha512, Salt::Digest) => &s::RSA_PSS_SHA512,
            (HashingAlgorithm::Sha256, Salt::Max) => &PSS_SHA256_MAX,
            (HashingAlgorithm::Sha384, Salt::Max) => &PSS_SHA384_MAX,
            (HashingAlgorithm::Sha512, Salt::Max) => &PSS_SHA512_MAX,
            (h, _) => return Err(unsupported_hash(h)),
        },
        Scheme::RsaPkcs1(h) => return Err(unsupported_hash(h)),
        _ => return Err(AsymError::Unsupported("not an RSA scheme".into())),
    })
}

fn rsa_verification(
    scheme: Scheme,
    modulus_bits: i32,
) -> Result<&'static signature::RsaParameters, AsymError> {
    use signature as s;
    use signature::RsaPssSaltLength::Max;
    static PSS_SHA256_MAX: s::RsaParameters = s::RSA_PSS_2048_8192_SHA256.with_pss_salt_length(Max);
    static PSS_SHA384_MAX: s::RsaParameters = s::RSA_PSS_2048_8192_SHA384.with_pss_salt_length(Max);
    static PSS_SHA512_MAX: s::RsaParameters = s::RSA_PSS_2048_8192_SHA512.with_pss_salt_length(Max);
    Ok(match scheme {
        Scheme::RsaPkcs1(HashingAlgorithm::Sha256) => &s::RSA_PKCS1_2048_8192_SHA256,
        Scheme::RsaPkcs1(HashingAlgorithm::Sha384) => &s::RSA_PKCS1_2048_8192_SHA384,
        Scheme::RsaPkcs1(HashingAlgorithm::Sha512) => &s::RSA_PKCS1_2048_8192_SHA512,
        Scheme::RsaPss(h, asked) => match (h, pss_salt(h, asked, modulus_bits)?) {
            (HashingAlgorithm::Sha256, Salt::Digest) => &s::RSA_PSS_2048_8192_SHA256,
            (HashingAlgorithm::Sha384, Salt::Digest) => &s::RSA_PSS_2048_8192_SHA384,
            (HashingAlgorithm::Sha512, Salt::Digest) => &s::RSA_PSS_2048_8192_SHA512,
            (HashingAlgorithm::Sha256, Salt::Max) => &PSS_SHA256_MAX,
            (HashingAlgorithm::Sha384, Salt::Max) => &PSS_SHA384_MAX,
            (HashingAlgorithm::Sha512, Salt::Max) => &PSS_SHA512_MAX,
            (h, _) => return Err(unsupported_hash(h)),
        },
        Scheme::RsaPkcs1(h) => return Err(unsupported_hash(h)),
        _ => return Err(AsymError::Unsupported("not an RSA scheme".into())),
    })
}

/// Signs `data` with a private key block.
pub fn sign(
    block: &KeyBlock,
    params: &CryptographicParameters,
    data: &[u8],
) -> Result<Vec<u8>, AsymError> {
    let key = private_of(block)?;
    let scheme = scheme(key.kind, params)?;
    let rng = SystemRandom::new();
    match (key.kind, scheme) {
        (KeyKind::Rsa, _) => {
            let pair = RsaKeyPair::from_der(&key.der).map_err(|_| AsymError::BadKey("RSA"))?;
            let mut out = vec![0u8; pair.public_modulus_len()];
            let bits = (pair.public_modulus_len() * 8) as i32;
            pair.sign(rsa_signing(scheme, bits)?, &rng, data, &mut out)
                .map_err(|_| AsymError::Failed("RSA signing failed"))?;
            Ok(out)
        }
        (KeyKind::Ec(curve), Scheme::Ecdsa(hash)) => {
            let pair = EcdsaKeyPair::from_pkcs8(curve.signing(hash)?.sign, &key.der)
                .map_err(|_| AsymError::BadKey("EC"))?;
            let sig = pair
                .sign(&rng, data)
                .map_err(|_| AsymError::Failed("ECDSA signing failed"))?;
            Ok(sig.as_ref().to_vec())
        }
        (KeyKind::Ed25519, _) => {
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&key.der)
                .map_err(|_| AsymError::BadKey("Ed25519"))?;
            Ok(pair.sign(data).as_ref().to_vec())
        }
        _ => Err(AsymError::Unsupported(
            "signature scheme does not match the key".into(),
        )),
    }
}

/// Whether `sig` is a valid signature of `data` under a public key block.
pub fn verify(
    block: &KeyBlock,
    params: &CryptographicParameters,
    data: &[u8],
    sig: &[u8],
) -> Result<bool, AsymError> {
    let key = public_of(block)?;
    let scheme = scheme(key.kind, params)?;
    let ok = match (key.kind, scheme) {
        (KeyKind::Rsa, _) => {
            let k =
                pkcs1::RsaPublicKey::from_der(&key.key).map_err(|_| AsymError::BadKey("RSA"))?;
            let bits = modulus_bits(k.modulus.as_bytes());
            // PSS with no salt length named: a signature with either common salt (the hash's
            // length, or the key's maximum) verifies, as signers differ in their default.
            let schemes = match scheme {
                Scheme::RsaPss(h, None) => {
                    let max = (bits + 6) / 8 - hash_len(h) as i32 - 2;
                    vec![Scheme::RsaPss(h, None), Scheme::RsaPss(h, Some(max))]
                }
                other => vec![other],
            };
            let mut valid = false;
            for scheme in schemes {
                valid |= UnparsedPublicKey::new(rsa_verification(scheme, bits)?, &key.key)
                    .verify(data, sig)
                    .is_ok();
            }
            valid
        }
        (KeyKind::Ec(curve), Scheme::Ecdsa(hash)) => {
            UnparsedPublicKey::new(curve.signing(hash)?.verify, &key.key)
                .verify(data, sig)
                .is_ok()
        }
        (KeyKind::Ed25519, _) => UnparsedPublicKey::new(&signature::ED25519, &key.key)
            .verify(data, sig)
            .is_ok(),
        _ => {
            return Err(AsymError::Unsupported(
                "signature scheme does not match the key".into(),
            ))
        }
    };
    Ok(ok)
}

// ------------------------------------------------------------------ RSA-OAEP

fn oaep(params: &CryptographicParameters) -> Result<&'static OaepAlgorithm, AsymError> {
    use aws_lc_rs::rsa as r;
    if params.padding_method != Some(PaddingMethod::Oaep) {
        return Err(AsymError::Unsupported(
            "RSA encrypts and decrypts with Padding Method OAEP only (PKCS#1 v1.5 encryption is not offered)".into(),
        ));
    }
    let hash = params.hashing_algorithm.unwrap_or(HashingAlgorithm::Sha256);
    if params
        .mask_generator
        .is_some_and(|m| m != MaskGenerator::Mgf1)
        || params
            .mask_generator_hashing_algorithm
            .is_some_and(|m| m != hash)
    {
        return Err(AsymError::Unsupported(
            "OAEP takes MGF1 with the same hash".into(),
        ));
    }
    Ok(match hash {
        HashingAlgorithm::Sha1 => &r::OAEP_SHA1_MGF1SHA1,
        HashingAlgorithm::Sha256 => &r::OAEP_SHA256_MGF1SHA256,
        HashingAlgorithm::Sha384 => &r::OAEP_SHA384_MGF1SHA384,
        HashingAlgorithm::Sha512 => &r::OAEP_SHA512_MGF1SHA512,
        h => return Err(unsupported_hash(h)),
    })
}

/// RSA-OAEP encryption with a public key block. The label is the P Source, if any.
pub fn oaep_encrypt(
    block: &KeyBlock,
    params: &CryptographicParameters,
    data: &[u8],
) -> Result<Vec<u8>, AsymError> {
    let algorithm = oaep(params)?;
    let key = public_of(block)?;
    if key.kind != KeyKind::Rsa {
        return Err(AsymError::Unsupported(
            "only RSA public keys encrypt".into(),
        ));
    }
    let spki_der = spki(RSA_ENCRYPTION, None, &key.key)?;
    let public = PublicEncryptingKey::from_der(&spki_der).map_err(|_| AsymError::BadKey("RSA"))?;
    let public = OaepPublicEncryptingKey::new(public).map_err(|_| AsymError::BadKey("RSA"))?;
    if data.len() > public.max_plaintext_size(algorithm) {
        return Err(AsymError::Unsupported(format!(
            "RSA-OAEP with this key encrypts at most {} bytes",
            public.max_plaintext_size(algorithm)
        )));
    }
    let mut out = vec![0u8; public.ciphertext_size()];
    let n = public
        .encrypt(algorithm, data, &mut out, params.p_source.as_deref())
        .map_err(|_| AsymError::Failed("RSA-OAEP encryption failed"))?
        .len();
    out.truncate(n);
    Ok(out)
}

/// RSA-OAEP decryption with a private key block. Every failure is the same error, whatever
/// went wrong inside the padding (no oracle).
pub fn oaep_decrypt(
    block: &KeyBlock,
    params: &CryptographicParameters,
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, AsymError> {
    let algorithm = oaep(params)?;
    let key = private_of(block)?;
    if key.kind != KeyKind::Rsa {
        return Err(AsymError::Unsupported(
            "only RSA private keys decrypt".into(),
        ));
    }
    let pkcs8 = pkcs8_of(RSA_ENCRYPTION, None, &key.der)?;
    let private = PrivateDecryptingKey::from_pkcs8(&pkcs8).map_err(|_| AsymError::BadKey("RSA"))?;
    let private = OaepPrivateDecryptingKey::new(private).map_err(|_| AsymError::BadKey("RSA"))?;
    let mut out = Zeroizing::new(vec![0u8; private.min_output_size()]);
    let n = private
        .decrypt(algorithm, data, &mut out, params.p_source.as_deref())
        .map_err(|_| AsymError::Failed("RSA-OAEP decryption failed"))?
        .len();
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests;
