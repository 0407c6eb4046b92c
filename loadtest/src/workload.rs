//! What is sent: the operations, their requests encoded once before the run (the generator
//! shares the CPU with the server, so the hot loop only copies bytes), and a scan of each
//! response for its result that reads a few headers instead of decoding the message.

use std::sync::Arc;

use bytes::Bytes;
use kmip::message::attributes::{Attributes, CryptographicParameters};
use kmip::message::payloads::{
    CreateKeyPairRequest, CreateRequest, DecryptRequest, EncryptRequest, GetRequest, SignRequest,
    SignatureVerifyRequest,
};
use kmip::message::{ByteString, RequestMessage, RequestPayload, UniqueIdentifier};
use kmip::spec::{CryptographicAlgorithm, ObjectType, ResultReason, ResultStatus};
use kmip::{ProtocolVersion, Tag};

/// The operation a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    Get,
    Create,
    Encrypt,
    Decrypt,
    /// Create Key Pair of an RSA-2048 pair.
    CreateKeyPairRsa2048,
    /// Create Key Pair of an ECDSA P-256 pair.
    CreateKeyPairP256,
    /// Sign [`PLAINTEXT`] with an RSA-2048 private key of the set-up phase.
    SignRsa2048,
    /// Sign [`PLAINTEXT`] with a P-256 private key of the set-up phase.
    SignP256,
    /// [`MIX_PATTERN`]: Get, Get, Get, Encrypt, Decrypt, repeated.
    Mix,
    /// Open the connections and hold them, sending nothing (memory per idle connection).
    Idle,
}

/// `--op mix`: a key consumer's pattern, mostly fetching keys, some wrapping and unwrapping
/// of data keys (60% Get, 20% Encrypt, 20% Decrypt).
pub const MIX_PATTERN: [Op; 5] = [Op::Get, Op::Get, Op::Get, Op::Encrypt, Op::Decrypt];

/// What Encrypt sends: a 32-byte data key, as a database wrapping its data key would. Sign
/// signs the same 32 bytes.
pub const PLAINTEXT: [u8; 32] = *b"openkcm loadtest 32-byte payload";
/// Fixed IV: every server accepts a client IV for CBC, and it keeps Decrypt's input fixed.
pub const IV: [u8; 16] = [7; 16];

impl Op {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "get" => Op::Get,
            "create" => Op::Create,
            "encrypt" => Op::Encrypt,
            "decrypt" => Op::Decrypt,
            "create-key-pair-rsa2048" => Op::CreateKeyPairRsa2048,
            "create-key-pair-p256" => Op::CreateKeyPairP256,
            "sign-rsa2048" => Op::SignRsa2048,
            "sign-p256" => Op::SignP256,
            "mix" => Op::Mix,
            "idle" => Op::Idle,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Create => "create",
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
            Op::CreateKeyPairRsa2048 => "create-key-pair-rsa2048",
            Op::CreateKeyPairP256 => "create-key-pair-p256",
            Op::SignRsa2048 => "sign-rsa2048",
            Op::SignP256 => "sign-p256",
            Op::Mix => "mix",
            Op::Idle => "idle",
        }
    }

    /// The set-up this op needs: keys to exist (and be Active for the crypto operations),
    /// and a ciphertext per key for Decrypt. For Sign the keys are key pairs.
    pub fn needs_keys(self) -> bool {
        !matches!(
            self,
            Op::Create | Op::CreateKeyPairRsa2048 | Op::CreateKeyPairP256 | Op::Idle
        )
    }

    /// The kind of key pair this op creates (Create Key Pair) or signs with (Sign).
    pub fn pair(self) -> Option<PairKind> {
        match self {
            Op::CreateKeyPairRsa2048 | Op::SignRsa2048 => Some(PairKind::Rsa2048),
            Op::CreateKeyPairP256 | Op::SignP256 => Some(PairKind::P256),
            _ => None,
        }
    }

    pub fn is_sign(self) -> bool {
        matches!(self, Op::SignRsa2048 | Op::SignP256)
    }

    pub fn needs_ciphertexts(self) -> bool {
        matches!(self, Op::Decrypt | Op::Mix)
    }

    /// The single operations a run of `self` sends, for per-operation statistics.
    pub fn parts(self) -> &'static [Op] {
        match self {
            Op::Get => &[Op::Get],
            Op::Create => &[Op::Create],
            Op::Encrypt => &[Op::Encrypt],
            Op::Decrypt => &[Op::Decrypt],
            Op::CreateKeyPairRsa2048 => &[Op::CreateKeyPairRsa2048],
            Op::CreateKeyPairP256 => &[Op::CreateKeyPairP256],
            Op::SignRsa2048 => &[Op::SignRsa2048],
            Op::SignP256 => &[Op::SignP256],
            Op::Mix => &[Op::Get, Op::Encrypt, Op::Decrypt],
            Op::Idle => &[],
        }
    }

    /// Index into per-operation tables ([`OP_SLOTS`] of them).
    pub fn slot(self) -> usize {
        match self {
            Op::Get => 0,
            Op::Create => 1,
            Op::Encrypt => 2,
            Op::Decrypt => 3,
            Op::CreateKeyPairRsa2048 | Op::CreateKeyPairP256 => 4,
            Op::SignRsa2048 | Op::SignP256 => 5,
            Op::Mix | Op::Idle => 0,
        }
    }
}

/// Get, Create, Encrypt, Decrypt, Create Key Pair, Sign.
pub const OP_SLOTS: usize = 6;

/// The key pairs of the asymmetric operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairKind {
    Rsa2048,
    P256,
}

impl PairKind {
    /// The pair's common attributes: algorithm and length; the server gives the private key
    /// the usage mask Sign and the public key Verify. ECDSA rather than EC: the
    /// enumeration exists in every KMIP version (EC only since 1.2).
    pub fn attributes(self) -> Attributes {
        let (algorithm, bits) = match self {
            PairKind::Rsa2048 => (CryptographicAlgorithm::Rsa, 2048),
            PairKind::P256 => (CryptographicAlgorithm::Ecdsa, 256),
        };
        Attributes::new()
            .with(Tag::CRYPTOGRAPHIC_ALGORITHM, &algorithm)
            .with(Tag::CRYPTOGRAPHIC_LENGTH, &bits)
    }
}

/// AES-CBC with PKCS#5 padding: the mode every KMIP server implements (MongoDB's default).
pub fn cbc_parameters() -> CryptographicParameters {
    CryptographicParameters::aes_cbc_pkcs5()
}

/// The attributes of the keys the set-up phase and `--op create` make: AES-256 for
/// Encrypt and Decrypt.
pub fn aes_256_attributes() -> Attributes {
    Attributes::aes_key(256)
}

fn encode(version: ProtocolVersion, payload: RequestPayload) -> Bytes {
    Bytes::from(RequestMessage::new(version, vec![payload]).to_ttlv())
}

pub fn create_request(version: ProtocolVersion) -> Bytes {
    encode(
        version,
        RequestPayload::Create(CreateRequest {
            object_type: ObjectType::SymmetricKey,
            attributes: Some(aes_256_attributes()),
            protection_storage_masks: None,
        }),
    )
}

pub fn create_key_pair_payload(kind: PairKind) -> RequestPayload {
    RequestPayload::CreateKeyPair(CreateKeyPairRequest {
        common_attributes: Some(kind.attributes()),
        private_key_attributes: None,
        public_key_attributes: None,
        common_protection_storage_masks: None,
        private_protection_storage_masks: None,
        public_protection_storage_masks: None,
    })
}

pub fn create_key_pair_request(version: ProtocolVersion, kind: PairKind) -> Bytes {
    encode(version, create_key_pair_payload(kind))
}

/// Sign [`PLAINTEXT`] with the server's default parameters for the key (RSA: PKCS#1 v1.5
/// with SHA-256; ECDSA: the curve's hash).
pub fn sign_payload(uid: &str) -> RequestPayload {
    RequestPayload::Sign(SignRequest {
        unique_identifier: Some(UniqueIdentifier::from(uid)),
        data: Some(ByteString::from(&PLAINTEXT[..])),
        ..SignRequest::default()
    })
}

pub fn sign_request(version: ProtocolVersion, uid: &str) -> Bytes {
    encode(version, sign_payload(uid))
}

/// Signature Verify of [`PLAINTEXT`] (set-up only: a sample of each key's signatures).
pub fn signature_verify_payload(public_uid: &str, signature: &[u8]) -> RequestPayload {
    RequestPayload::SignatureVerify(SignatureVerifyRequest {
        unique_identifier: Some(UniqueIdentifier::from(public_uid)),
        data: Some(ByteString::from(&PLAINTEXT[..])),
        signature_data: Some(ByteString::from(signature)),
        ..SignatureVerifyRequest::default()
    })
}

pub fn get_request(version: ProtocolVersion, uid: &str) -> Bytes {
    encode(version, RequestPayload::Get(GetRequest::of(uid)))
}

pub fn encrypt_request(version: ProtocolVersion, uid: &str) -> Bytes {
    encode(
        version,
        RequestPayload::Encrypt(EncryptRequest {
            unique_identifier: Some(UniqueIdentifier::from(uid)),
            cryptographic_parameters: Some(cbc_parameters()),
            data: Some(ByteString::from(&PLAINTEXT[..])),
            iv_counter_nonce: Some(ByteString::from(&IV[..])),
            correlation_value: None,
            init_indicator: None,
            final_indicator: None,
            authenticated_encryption_additional_data: None,
        }),
    )
}

pub fn decrypt_request(version: ProtocolVersion, uid: &str, ciphertext: &[u8]) -> Bytes {
    encode(
        version,
        RequestPayload::Decrypt(DecryptRequest {
            unique_identifier: Some(UniqueIdentifier::from(uid)),
            cryptographic_parameters: Some(cbc_parameters()),
            data: Some(ByteString::from(ciphertext)),
            iv_counter_nonce: Some(ByteString::from(&IV[..])),
            correlation_value: None,
            init_indicator: None,
            final_indicator: None,
            authenticated_encryption_additional_data: None,
            authenticated_encryption_tag: None,
        }),
    )
}

/// Every request a run can send, encoded once (only those its operation uses: a million
/// keys of Get requests is ~150 MB). Cloning a [`Bytes`] is a reference count.
#[derive(Debug)]
pub struct Requests {
    op: Op,
    /// The one request of the ops without keys: Create, or Create Key Pair of `op`'s kind.
    create: Bytes,
    get: Vec<Bytes>,
    encrypt: Vec<Bytes>,
    decrypt: Vec<Bytes>,
    sign: Vec<Bytes>,
}

/// A key the set-up phase prepared: its identifier and, when Decrypt is measured, the
/// server's ciphertext of [`PLAINTEXT`].
#[derive(Clone, Debug)]
pub struct PreparedKey {
    pub uid: String,
    pub ciphertext: Option<Vec<u8>>,
}

impl Requests {
    pub fn new(op: Op, version: ProtocolVersion, keys: &[PreparedKey]) -> Arc<Self> {
        let uses = |o: Op| op == o || (op == Op::Mix && MIX_PATTERN.contains(&o));
        let each = |o: Op, f: &dyn Fn(&PreparedKey) -> Option<Bytes>| -> Vec<Bytes> {
            if uses(o) {
                keys.iter().filter_map(f).collect()
            } else {
                Vec::new()
            }
        };
        let create = match op.pair() {
            Some(kind) if !op.is_sign() => create_key_pair_request(version, kind),
            _ => create_request(version),
        };
        Arc::new(Self {
            op,
            create,
            get: each(Op::Get, &|k| Some(get_request(version, &k.uid))),
            encrypt: each(Op::Encrypt, &|k| Some(encrypt_request(version, &k.uid))),
            decrypt: each(Op::Decrypt, &|k| {
                k.ciphertext
                    .as_deref()
                    .map(|c| decrypt_request(version, &k.uid, c))
            }),
            sign: if op.is_sign() {
                keys.iter().map(|k| sign_request(version, &k.uid)).collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Keys the request tables cycle through.
    pub fn keys(&self) -> usize {
        self.get
            .len()
            .max(self.encrypt.len())
            .max(self.decrypt.len())
            .max(self.sign.len())
    }

    /// The `n`-th request of a connection: the operation (for mix, from [`MIX_PATTERN`]) and
    /// its bytes, cycling through the keys from `offset` so that connections spread over
    /// them.
    pub fn nth(&self, n: u64, offset: u64) -> (Op, &Bytes) {
        let op = match self.op {
            Op::Mix => MIX_PATTERN[(n % MIX_PATTERN.len() as u64) as usize],
            op => op,
        };
        let table = match op {
            Op::Get => &self.get,
            Op::Encrypt => &self.encrypt,
            Op::Decrypt => &self.decrypt,
            Op::SignRsa2048 | Op::SignP256 => &self.sign,
            // Create and Create Key Pair: the same request every time.
            _ => return (op, &self.create),
        };
        if table.is_empty() {
            return (Op::Create, &self.create);
        }
        let i = (n / self.step()).wrapping_add(offset) % table.len() as u64;
        (op, &table[i as usize])
    }

    /// In a mix, one key serves a whole pattern (Get, Get, Get, Encrypt, Decrypt), as one
    /// client would use its key.
    fn step(&self) -> u64 {
        if self.op == Op::Mix {
            MIX_PATTERN.len() as u64
        } else {
            1
        }
    }
}

/// The result of one answered request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: u32,
    pub reason: Option<u32>,
}

impl Outcome {
    pub fn is_success(self) -> bool {
        self.status == ResultStatus::Success.value()
    }

    /// "Item Not Found", or the status when no reason was given.
    pub fn describe(self) -> String {
        match self.reason {
            Some(r) => match ResultReason::from_value(r) {
                Some(reason) => reason.name().to_owned(),
                None => format!("Result Reason {r:#x}"),
            },
            None => match ResultStatus::from_value(self.status) {
                Some(s) => format!("{} (no reason)", s.name()),
                None => format!("Result Status {:#x}", self.status),
            },
        }
    }
}

/// Why a response could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("malformed response")]
    Malformed,
    #[error("response without a batch item")]
    NoBatchItem,
    #[error("batch item without a result status")]
    NoResultStatus,
}

const STRUCTURE: u8 = 0x01;
const ENUMERATION: u8 = 0x05;

/// Reads the first batch item's Result Status and Result Reason from a TTLV response
/// without decoding the rest: the per-request cost of checking an answer stays at a few
/// header reads.
pub fn scan_response(bytes: &[u8]) -> Result<Outcome, ScanError> {
    let (tag, ty, body) = item(bytes).ok_or(ScanError::Malformed)?;
    if tag != Tag::RESPONSE_MESSAGE.0 || ty != STRUCTURE {
        return Err(ScanError::Malformed);
    }
    let batch = children(body)
        .find(|c| matches!(c, Ok((t, STRUCTURE, _)) if *t == Tag::BATCH_ITEM.0))
        .ok_or(ScanError::NoBatchItem)??;
    let mut status = None;
    let mut reason = None;
    for child in children(batch.2) {
        let (t, ty, v) = child?;
        if ty != ENUMERATION || v.len() < 4 {
            continue;
        }
        let value = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        if t == Tag::RESULT_STATUS.0 {
            status = Some(value);
        } else if t == Tag::RESULT_REASON.0 {
            reason = Some(value);
        }
    }
    Ok(Outcome {
        status: status.ok_or(ScanError::NoResultStatus)?,
        reason,
    })
}

/// One item at the start of `bytes`: (tag, type, value bytes without padding).
fn item(bytes: &[u8]) -> Option<(u32, u8, &[u8])> {
    let header = bytes.get(..8)?;
    let tag = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    Some((tag, header[3], bytes.get(8..8usize.checked_add(len)?)?))
}

/// The items inside a structure's value, each `Err` once the bytes stop making sense.
fn children(mut body: &[u8]) -> impl Iterator<Item = Result<(u32, u8, &[u8]), ScanError>> {
    std::iter::from_fn(move || {
        if body.is_empty() {
            return None;
        }
        let Some((tag, ty, value)) = item(body) else {
            body = &[];
            return Some(Err(ScanError::Malformed));
        };
        let padded = (8 + value.len()).next_multiple_of(8);
        body = body.get(padded..).unwrap_or(&[]);
        Some(Ok((tag, ty, value)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmip::message::payloads::IdResponse;
    use kmip::message::{ResponseBatchItem, ResponseMessage, ResponsePayload};
    use kmip::Limits;

    fn response(item: ResponseBatchItem) -> Vec<u8> {
        ResponseMessage::new(ProtocolVersion::V1_4, vec![item]).to_ttlv()
    }

    #[test]
    fn scan_reads_success() {
        let bytes = response(ResponseBatchItem::success(ResponsePayload::Activate(
            IdResponse {
                unique_identifier: UniqueIdentifier::from("k-1"),
            },
        )));
        let outcome = scan_response(&bytes).expect("scans");
        assert!(outcome.is_success());
        assert_eq!(outcome.reason, None);
    }

    #[test]
    fn scan_reads_failure_reason() {
        let item = ResponseBatchItem::failure(
            Some(kmip::spec::Operation::Get.value()),
            ResultReason::ItemNotFound,
            "no such key",
        );
        let outcome = scan_response(&response(item)).expect("scans");
        assert!(!outcome.is_success());
        assert_eq!(outcome.describe(), "Item Not Found");
    }

    #[test]
    fn scan_refuses_garbage_without_panicking() {
        assert_eq!(scan_response(&[]), Err(ScanError::Malformed));
        assert_eq!(
            scan_response(&[0x42, 0, 0x7b, 1, 0, 0, 1, 0]),
            Err(ScanError::Malformed)
        );
        let request = get_request(ProtocolVersion::V1_4, "x");
        assert_eq!(scan_response(&request), Err(ScanError::Malformed));
        // A truncated response: every prefix is an error or a result, never a panic.
        let whole = response(ResponseBatchItem::success(ResponsePayload::Activate(
            IdResponse {
                unique_identifier: UniqueIdentifier::from("k-1"),
            },
        )));
        for n in 0..whole.len() {
            let _ = scan_response(&whole[..n]);
        }
    }

    #[test]
    fn requests_are_valid_kmip() {
        for v in [
            ProtocolVersion::V1_2,
            ProtocolVersion::V1_4,
            ProtocolVersion::V2_0,
        ] {
            for bytes in [
                create_request(v),
                get_request(v, "u"),
                encrypt_request(v, "u"),
                decrypt_request(v, "u", &[1; 48]),
                create_key_pair_request(v, PairKind::Rsa2048),
                create_key_pair_request(v, PairKind::P256),
                sign_request(v, "u"),
            ] {
                let m = RequestMessage::from_ttlv(&bytes, &Limits::default()).expect("decodes");
                assert_eq!(m.version(), v);
                assert_eq!(m.batch_items.len(), 1);
            }
        }
    }

    #[test]
    fn asymmetric_requests_decode_to_their_shape() {
        // Sign and Signature Verify exist since KMIP 1.2.
        for v in [
            ProtocolVersion::V1_2,
            ProtocolVersion::V1_4,
            ProtocolVersion::V2_0,
            ProtocolVersion::V2_1,
        ] {
            let decode = |bytes: &[u8]| {
                let mut m = RequestMessage::from_ttlv(bytes, &Limits::default()).expect("decodes");
                assert_eq!(m.version(), v);
                m.batch_items.remove(0).payload.expect("typed payload")
            };
            for (kind, algorithm, bits) in [
                (PairKind::Rsa2048, CryptographicAlgorithm::Rsa, 2048),
                (PairKind::P256, CryptographicAlgorithm::Ecdsa, 256),
            ] {
                let RequestPayload::CreateKeyPair(r) = decode(&create_key_pair_request(v, kind))
                else {
                    panic!("{v}: not a Create Key Pair");
                };
                let common = r.common_attributes.expect("common attributes");
                assert_eq!(
                    common.cryptographic_algorithm().expect("ok"),
                    Some(algorithm)
                );
                assert_eq!(common.cryptographic_length().expect("ok"), Some(bits));
                assert!(r.private_key_attributes.is_none() && r.public_key_attributes.is_none());
            }
            let RequestPayload::Sign(s) = decode(&sign_request(v, "priv-1")) else {
                panic!("{v}: not a Sign");
            };
            assert_eq!(s.unique_identifier, Some(UniqueIdentifier::from("priv-1")));
            assert_eq!(s.data.as_deref(), Some(&PLAINTEXT[..]));
            assert!(s.cryptographic_parameters.is_none() && s.digested_data.is_none());
            let bytes = encode(v, signature_verify_payload("pub-1", &[9; 64]));
            let RequestPayload::SignatureVerify(sv) = decode(&bytes) else {
                panic!("{v}: not a Signature Verify");
            };
            assert_eq!(sv.unique_identifier, Some(UniqueIdentifier::from("pub-1")));
            assert_eq!(sv.data.as_deref(), Some(&PLAINTEXT[..]));
            assert_eq!(sv.signature_data.as_deref(), Some(&[9u8; 64][..]));
        }
    }

    #[test]
    fn op_names_parse_back_and_match_the_json() {
        for op in [
            Op::Get,
            Op::Create,
            Op::Encrypt,
            Op::Decrypt,
            Op::CreateKeyPairRsa2048,
            Op::CreateKeyPairP256,
            Op::SignRsa2048,
            Op::SignP256,
            Op::Mix,
            Op::Idle,
        ] {
            assert_eq!(Op::parse(op.name()), Some(op));
            let json = serde_json::to_string(&op).expect("serializes");
            assert_eq!(json, format!("\"{}\"", op.name()));
            assert!(op.slot() < OP_SLOTS);
        }
        assert!(Op::SignP256.needs_keys() && !Op::SignP256.needs_ciphertexts());
        assert!(!Op::CreateKeyPairRsa2048.needs_keys());
    }

    #[test]
    fn sign_rotates_over_the_pairs_and_create_key_pair_repeats() {
        let keys: Vec<PreparedKey> = (0..3)
            .map(|i| PreparedKey {
                uid: format!("priv-{i}"),
                ciphertext: None,
            })
            .collect();
        let s = Requests::new(Op::SignP256, ProtocolVersion::V1_4, &keys);
        assert_eq!(s.keys(), 3);
        assert_eq!(s.nth(0, 0).0, Op::SignP256);
        assert_eq!(
            s.nth(0, 0).1,
            &sign_request(ProtocolVersion::V1_4, "priv-0")
        );
        assert_eq!(
            s.nth(4, 0).1,
            &sign_request(ProtocolVersion::V1_4, "priv-1")
        );
        assert_eq!(
            s.nth(0, 2).1,
            &sign_request(ProtocolVersion::V1_4, "priv-2")
        );
        let c = Requests::new(Op::CreateKeyPairRsa2048, ProtocolVersion::V1_4, &[]);
        assert_eq!(c.keys(), 0);
        let (op, bytes) = c.nth(5, 1);
        assert_eq!(op, Op::CreateKeyPairRsa2048);
        assert_eq!(
            bytes,
            &create_key_pair_request(ProtocolVersion::V1_4, PairKind::Rsa2048)
        );
    }

    #[test]
    fn mix_follows_the_pattern_and_keys_rotate() {
        let keys: Vec<PreparedKey> = (0..3)
            .map(|i| PreparedKey {
                uid: format!("k{i}"),
                ciphertext: Some(vec![0; 48]),
            })
            .collect();
        let r = Requests::new(Op::Mix, ProtocolVersion::V1_4, &keys);
        let ops: Vec<Op> = (0..10).map(|n| r.nth(n, 0).0).collect();
        assert_eq!(&ops[..5], &MIX_PATTERN);
        assert_eq!(&ops[5..], &MIX_PATTERN);
        // One key per pattern round.
        assert_eq!(r.nth(0, 0).1, r.nth(1, 0).1);
        assert_ne!(r.nth(0, 0).1, r.nth(5, 0).1);
        let g = Requests::new(Op::Get, ProtocolVersion::V1_4, &keys);
        assert_eq!(g.nth(0, 0).1, g.nth(3, 0).1);
        assert_eq!(g.nth(1, 0).1, g.nth(0, 1).1);
        let c = Requests::new(Op::Create, ProtocolVersion::V1_4, &[]);
        assert_eq!(c.nth(17, 3).0, Op::Create);
    }
}
