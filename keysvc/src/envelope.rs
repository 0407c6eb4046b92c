//! Keys at rest: every managed object's material is wrapped with AES-256-GCM-SIV under a
//! per-tenant key-encryption key derived from the root key.
//!
//! ```text
//! root key (32 bytes, id) ──HKDF-SHA-256(info = "openkcm/v1/tenant/<tenant>")──► tenant KEK
//! tenant KEK ──AES-256-GCM-SIV(nonce, aad = tenant ‖ uid ‖ object type)──► WrappedKey
//! ```
//!
//! The associated data binds a wrapped blob to its tenant and object: a row copied to
//! another tenant, or to another object, does not decrypt. GCM-SIV is misuse-resistant, so
//! even a repeated random nonce does not expose the key.

use std::fmt;

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use base64::Engine as _;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::tenant::TenantId;

/// Length of a root key and of every derived KEK: AES-256.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
/// First byte of a wrapped blob: the format, so a future scheme can coexist with this one.
const FORMAT_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("root key must be {KEY_LEN} bytes of base64, got {0} bytes")]
    BadRootKeyLength(usize),
    #[error("root key is not valid base64")]
    BadRootKeyEncoding,
    #[error("root key id must be 1-64 characters of A-Z a-z 0-9 . _ -")]
    BadRootKeyId,
    #[error("object was wrapped under root key {0:?}, which is not loaded")]
    UnknownRootKey(String),
    /// Wrong tenant, wrong object, tampered or truncated blob: deliberately one error.
    #[error("wrapped key does not decrypt for this tenant and object")]
    Unwrap,
}

/// The root key: 32 secret bytes and a public id naming it. Zeroized on drop; never printed.
pub struct RootKey {
    id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl RootKey {
    pub fn new(id: &str, key: [u8; KEY_LEN]) -> Result<Self, EnvelopeError> {
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !id_ok {
            return Err(EnvelopeError::BadRootKeyId);
        }
        Ok(Self {
            id: id.to_owned(),
            key: Zeroizing::new(key),
        })
    }

    /// Parses the 32-byte key from base64 (surrounding whitespace ignored, as in a file).
    pub fn from_base64(id: &str, text: &str) -> Result<Self, EnvelopeError> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| EnvelopeError::BadRootKeyEncoding)?,
        );
        let key: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| EnvelopeError::BadRootKeyLength(bytes.len()))?;
        Self::new(id, key)
    }

    /// A fresh random root key (for `openkcm dev` and tests).
    pub fn generate(id: &str) -> Result<Self, EnvelopeError> {
        let mut key = [0u8; KEY_LEN];
        rand::fill(&mut key);
        let root = Self::new(id, key);
        zeroize::Zeroize::zeroize(&mut key);
        root
    }

    /// The key as base64, for writing a generated key to its file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.key.as_slice()))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tenant's key-encryption key.
    fn tenant_kek(&self, tenant: &TenantId) -> Zeroizing<[u8; KEY_LEN]> {
        let hk = Hkdf::<Sha256>::new(None, self.key.as_slice());
        let info = format!("openkcm/v1/tenant/{}", tenant.as_str());
        let mut kek = Zeroizing::new([0u8; KEY_LEN]);
        // HKDF-SHA-256 can produce up to 8160 bytes; 32 always succeeds.
        let _ = hk.expand(info.as_bytes(), kek.as_mut_slice());
        kek
    }
}

impl RootKey {
    /// The check value recorded for this key in the database: HMAC-SHA-256, under a key
    /// derived from the root key with its own HKDF label, of a fixed label, the key id and
    /// the `legacy_rows` flag recorded with it. It proves the bytes without revealing them.
    pub fn check_value(&self, legacy_rows: bool) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(None, self.key.as_slice());
        let mut check_key = Zeroizing::new([0u8; KEY_LEN]);
        let _ = hk.expand(b"openkcm/v1/root-key-check", check_key.as_mut_slice());
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(check_key.as_slice())
            .expect("HMAC takes any key length");
        mac.update(b"openkcm root key check v1\0");
        mac.update(&(self.id.len() as u32).to_be_bytes());
        mac.update(self.id.as_bytes());
        mac.update(&[u8::from(legacy_rows)]);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Wrapped key material as stored: the root key it was wrapped under and the sealed blob
/// (`format ‖ nonce ‖ ciphertext+tag`).
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub root_key_id: String,
    pub blob: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WrappedKey({}, {} bytes)",
            self.root_key_id,
            self.blob.len()
        )
    }
}

/// First byte of a record authenticator (`integrity` column).
const INTEGRITY_V1: u8 = 1;
const TAG_LEN: usize = 32;

/// Everything a record authenticator covers: the stored record but its derived columns
/// (state, algorithm, length, index), which the reader checks against `attributes`.
#[derive(Clone, Copy, Debug)]
pub struct SealedRecord<'a> {
    pub tenant: &'a TenantId,
    pub uid: &'a str,
    pub object_type: u32,
    pub version: i64,
    pub created_at: i64,
    /// The attributes as stored (TTLV).
    pub attributes: &'a [u8],
    pub material: Option<&'a WrappedKey>,
}

impl SealedRecord<'_> {
    fn tag(&self, root: &RootKey) -> [u8; TAG_LEN] {
        // A key of its own, derived from the tenant KEK with a distinct label: it covers
        // destroyed objects (no material) as well.
        let kek = root.tenant_kek(self.tenant);
        let hk = Hkdf::<Sha256>::new(None, kek.as_slice());
        let mut mac_key = Zeroizing::new([0u8; KEY_LEN]);
        let _ = hk.expand(b"openkcm/v1/record-mac", mac_key.as_mut_slice());
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(mac_key.as_slice())
            .expect("HMAC takes any key length");
        let mut part = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        part(b"openkcm record v1");
        part(self.tenant.as_str().as_bytes());
        part(self.uid.as_bytes());
        part(&self.object_type.to_be_bytes());
        part(&self.version.to_be_bytes());
        part(&self.created_at.to_be_bytes());
        part(self.attributes);
        match self.material {
            None => part(b"destroyed"),
            Some(w) => {
                part(b"material");
                part(w.root_key_id.as_bytes());
                part(&w.blob);
            }
        }
        mac.finalize().into_bytes().into()
    }
}

/// The root key id a record authenticator was made under, if it is well formed.
pub fn integrity_key_id(integrity: &[u8]) -> Option<&str> {
    let (&format, rest) = integrity.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if format != INTEGRITY_V1 || rest.len() != usize::from(len) + TAG_LEN {
        return None;
    }
    std::str::from_utf8(&rest[..usize::from(len)]).ok()
}

/// What a wrapped blob is bound to: it unwraps only for the same tenant, object and type.
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    pub tenant: &'a TenantId,
    pub uid: &'a str,
    pub object_type: u32,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") cannot collide.
        let mut aad = Vec::with_capacity(16 + self.tenant.as_str().len() + self.uid.len());
        for part in [self.tenant.as_str().as_bytes(), self.uid.as_bytes()] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad.extend_from_slice(&self.object_type.to_be_bytes());
        aad
    }
}

/// What a sealed token is for. Each purpose is its own [`Binding::object_type`], outside the
/// range of KMIP object types (whose values are small; 0xFFFF_FFxx is not one), so a token
/// never opens as an object's key material, nor as a token of another purpose, nor the reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPurpose {
    /// The Correlation Value between the parts of a multi-part AES-GCM Encrypt.
    GcmEncryptStream,
    /// The Correlation Value between the parts of a multi-part AES-GCM Decrypt.
    GcmDecryptStream,
}

impl TokenPurpose {
    fn object_type(self) -> u32 {
        match self {
            Self::GcmEncryptStream => 0xFFFF_FF01,
            Self::GcmDecryptStream => 0xFFFF_FF02,
        }
    }
}

/// The loaded root keys: the current one wraps, any of them unwraps (old ones stay loaded
/// while `rotate-root` rewraps objects).
#[derive(Debug)]
pub struct Keyring {
    current: RootKey,
    previous: Vec<RootKey>,
    /// Root key ids under which rows written before records were authenticated may still
    /// be read; set from the database's verified root key records at start-up.
    legacy: Mutex<HashSet<String>>,
}

impl Keyring {
    pub fn new(current: RootKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
            legacy: Mutex::new(HashSet::new()),
        }
    }

    /// Every loaded root key, the current one first.
    pub fn keys(&self) -> impl Iterator<Item = &RootKey> {
        std::iter::once(&self.current).chain(&self.previous)
    }

    /// Allows rows that predate authenticated records under root key `id` (and destroyed
    /// ones, which name no key): called for the keys whose verified record says so.
    pub fn permit_legacy_rows(&self, id: &str) {
        self.legacy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned());
    }

    /// Whether rows predating authenticated records may be read under root key `id`; `None`
    /// asks whether any loaded key allows them.
    pub fn legacy_rows_permitted(&self, id: Option<&str>) -> bool {
        let legacy = self.legacy.lock().unwrap_or_else(PoisonError::into_inner);
        match id {
            Some(id) => legacy.contains(id),
            None => !legacy.is_empty(),
        }
    }

    /// Adds a retired root key that may still unwrap stored objects.
    pub fn with_previous(mut self, key: RootKey) -> Self {
        self.previous.push(key);
        self
    }

    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    pub fn current(&self) -> &RootKey {
        &self.current
    }

    fn key(&self, id: &str) -> Option<&RootKey> {
        self.keys().find(|k| k.id() == id)
    }

    /// The authenticator of a record, under the current root key:
    /// `format ‖ id length ‖ root key id ‖ HMAC-SHA-256`.
    pub fn seal_record(&self, record: SealedRecord<'_>) -> Vec<u8> {
        let id = self.current.id().as_bytes();
        let mut out = Vec::with_capacity(2 + id.len() + TAG_LEN);
        out.push(INTEGRITY_V1);
        // Root key ids are at most 64 bytes (RootKey::new).
        out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(id);
        out.extend_from_slice(&record.tag(&self.current));
        out
    }

    /// Checks a record's authenticator: [`EnvelopeError::UnknownRootKey`] if it was made
    /// under a key that is not loaded, [`EnvelopeError::Unwrap`] if it does not match (the
    /// record was changed outside keysvc) or is malformed.
    pub fn verify_record(
        &self,
        record: SealedRecord<'_>,
        integrity: &[u8],
    ) -> Result<(), EnvelopeError> {
        let id = integrity_key_id(integrity).ok_or(EnvelopeError::Unwrap)?;
        let root = self
            .key(id)
            .ok_or_else(|| EnvelopeError::UnknownRootKey(id.to_owned()))?;
        let expected = record.tag(root);
        let stored = &integrity[integrity.len() - TAG_LEN..];
        let differs = expected
            .iter()
            .zip(stored)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs == 0 {
            Ok(())
        } else {
            Err(EnvelopeError::Unwrap)
        }
    }

    /// Seals `plaintext` for the binding under the current root key.
    pub fn wrap(&self, binding: Binding<'_>, plaintext: &[u8]) -> WrappedKey {
        let kek = self.current.tenant_kek(binding.tenant);
        let cipher = Aes256GcmSiv::new_from_slice(kek.as_slice()).expect("32-byte key");
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let aad = binding.aad();
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM-SIV encryption of an in-memory buffer cannot fail");
        let mut blob = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        blob.push(FORMAT_V1);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        WrappedKey {
            root_key_id: self.current.id().to_owned(),
            blob,
        }
    }

    /// Seals a token that the service hands a client and takes back later (the Correlation
    /// Value of a multi-part operation): [`Keyring::wrap`] under the tenant's key, bound to
    /// the tenant, the object `uid` and the purpose. The token is `root key id length ‖ root
    /// key id ‖ blob`, so any replica with the same keyring opens it, also across a root key
    /// rotation while the old key stays loaded.
    pub fn seal_token(
        &self,
        tenant: &TenantId,
        uid: &str,
        purpose: TokenPurpose,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let binding = Binding {
            tenant,
            uid,
            object_type: purpose.object_type(),
        };
        let wrapped = self.wrap(binding, plaintext);
        let id = wrapped.root_key_id.as_bytes();
        let mut token = Vec::with_capacity(1 + id.len() + wrapped.blob.len());
        // Root key ids are at most 64 bytes (RootKey::new).
        token.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
        token.extend_from_slice(id);
        token.extend_from_slice(&wrapped.blob);
        token
    }

    /// Opens a [`Keyring::seal_token`] token. Every failure — another tenant, object or
    /// purpose, tampering, truncation, a root key no longer loaded — is the same
    /// [`EnvelopeError::Unwrap`], so a caller cannot tell a foreign token from garbage.
    pub fn open_token(
        &self,
        tenant: &TenantId,
        uid: &str,
        purpose: TokenPurpose,
        token: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let (&id_len, rest) = token.split_first().ok_or(EnvelopeError::Unwrap)?;
        let (id, blob) = rest
            .split_at_checked(usize::from(id_len))
            .ok_or(EnvelopeError::Unwrap)?;
        let wrapped = WrappedKey {
            root_key_id: std::str::from_utf8(id)
                .map_err(|_| EnvelopeError::Unwrap)?
                .to_owned(),
            blob: blob.to_vec(),
        };
        let binding = Binding {
            tenant,
            uid,
            object_type: purpose.object_type(),
        };
        self.unwrap(binding, &wrapped)
            .map_err(|_| EnvelopeError::Unwrap)
    }

    /// Opens a wrapped blob for the binding. Any mismatch — tenant, object, type,
    /// tampering — is the same [`EnvelopeError::Unwrap`].
    pub fn unwrap(
        &self,
        binding: Binding<'_>,
        wrapped: &WrappedKey,
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let root = self
            .key(&wrapped.root_key_id)
            .ok_or_else(|| EnvelopeError::UnknownRootKey(wrapped.root_key_id.clone()))?;
        let (format, rest) = wrapped.blob.split_first().ok_or(EnvelopeError::Unwrap)?;
        if *format != FORMAT_V1 || rest.len() < NONCE_LEN {
            return Err(EnvelopeError::Unwrap);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| EnvelopeError::Unwrap)?;
        let kek = root.tenant_kek(binding.tenant);
        let cipher =
            Aes256GcmSiv::new_from_slice(kek.as_slice()).map_err(|_| EnvelopeError::Unwrap)?;
        let aad = binding.aad();
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| EnvelopeError::Unwrap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).expect("valid")
    }

    #[test]
    fn wrapped_material_opens_only_for_its_tenant_object_and_type() {
        let ring = Keyring::new(RootKey::generate("root-1").expect("key"));
        let a = tenant("tenant-a");
        let b = tenant("tenant-b");
        let bind = Binding {
            tenant: &a,
            uid: "uid-1",
            object_type: 2,
        };
        let w = ring.wrap(bind, b"0123456789abcdef0123456789abcdef");
        assert_eq!(
            &ring.unwrap(bind, &w).expect("opens")[..],
            b"0123456789abcdef0123456789abcdef"
        );
        for other in [
            Binding { tenant: &b, ..bind },
            Binding {
                uid: "uid-2",
                ..bind
            },
            Binding {
                object_type: 7,
                ..bind
            },
        ] {
            assert!(matches!(ring.unwrap(other, &w), Err(EnvelopeError::Unwrap)));
        }
        let mut tampered = w.clone();
        let last = tampered.blob.len() - 1;
        tampered.blob[last] ^= 1;
        assert!(matches!(
            ring.unwrap(bind, &tampered),
            Err(EnvelopeError::Unwrap)
        ));
        tampered.blob.truncate(5);
        assert!(matches!(
            ring.unwrap(bind, &tampered),
            Err(EnvelopeError::Unwrap)
        ));
    }

    #[test]
    fn tokens_open_only_for_their_tenant_object_and_purpose() {
        let ring = Keyring::new(RootKey::generate("root-1").expect("key"));
        let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
        let enc = TokenPurpose::GcmEncryptStream;
        let token = ring.seal_token(&a, "uid-1", enc, b"state");
        assert_eq!(
            &ring.open_token(&a, "uid-1", enc, &token).expect("opens")[..],
            b"state"
        );
        let dec = TokenPurpose::GcmDecryptStream;
        let mut tampered = token.clone();
        *tampered.last_mut().expect("non-empty") ^= 1;
        let other_root = Keyring::new(RootKey::generate("root-2").expect("key"));
        for refused in [
            ring.open_token(&b, "uid-1", enc, &token),
            ring.open_token(&a, "uid-2", enc, &token),
            ring.open_token(&a, "uid-1", dec, &token),
            ring.open_token(&a, "uid-1", enc, &tampered),
            ring.open_token(&a, "uid-1", enc, &token[..token.len() / 2]),
            ring.open_token(&a, "uid-1", enc, b""),
            ring.open_token(&a, "uid-1", enc, &[200, 1, 2]),
            other_root.open_token(&a, "uid-1", enc, &token),
        ] {
            assert!(matches!(refused, Err(EnvelopeError::Unwrap)), "{refused:?}");
        }
        // A token is not a wrapped key, nor the reverse.
        let bind = Binding {
            tenant: &a,
            uid: "uid-1",
            object_type: 2,
        };
        let wrapped = ring.wrap(bind, b"key");
        let mut as_token = vec![u8::try_from(wrapped.root_key_id.len()).expect("short")];
        as_token.extend_from_slice(wrapped.root_key_id.as_bytes());
        as_token.extend_from_slice(&wrapped.blob);
        assert!(ring.open_token(&a, "uid-1", enc, &as_token).is_err());
    }

    #[test]
    fn a_rotated_keyring_still_opens_old_objects_and_wraps_under_the_new_key() {
        let old = RootKey::from_base64("old", &RootKey::generate("x").expect("k").to_base64())
            .expect("k");
        let old_b64 = old.to_base64();
        let t = tenant("t");
        let bind = Binding {
            tenant: &t,
            uid: "u",
            object_type: 2,
        };
        let w = Keyring::new(old).wrap(bind, b"secret");
        let ring = Keyring::new(RootKey::generate("new").expect("k"))
            .with_previous(RootKey::from_base64("old", &old_b64).expect("k"));
        assert_eq!(
            &ring.unwrap(bind, &w).expect("old key loaded")[..],
            b"secret"
        );
        assert_eq!(ring.wrap(bind, b"secret").root_key_id, "new");
        let without_old = Keyring::new(RootKey::generate("new").expect("k"));
        assert!(matches!(
            without_old.unwrap(bind, &w),
            Err(EnvelopeError::UnknownRootKey(_))
        ));
    }

    #[test]
    fn root_keys_are_validated_and_never_printed() {
        assert!(matches!(
            RootKey::from_base64("k", "c2hvcnQ="),
            Err(EnvelopeError::BadRootKeyLength(5))
        ));
        assert!(matches!(
            RootKey::from_base64("k", "***"),
            Err(EnvelopeError::BadRootKeyEncoding)
        ));
        assert!(matches!(
            RootKey::new("bad id", [0; 32]),
            Err(EnvelopeError::BadRootKeyId)
        ));
        let key = RootKey::new("k", [0x41; 32]).expect("valid");
        let shown = format!("{key:?}");
        assert!(
            !shown.contains("QUFB") && !shown.contains("65, 65"),
            "{shown}"
        );
    }

    #[test]
    fn tenant_keks_differ_per_tenant() {
        let root = RootKey::new("k", [7; 32]).expect("valid");
        assert_ne!(
            *root.tenant_kek(&tenant("a")),
            *root.tenant_kek(&tenant("b"))
        );
        assert_eq!(
            *root.tenant_kek(&tenant("a")),
            *root.tenant_kek(&tenant("a"))
        );
    }
}
