//! The certificate authority: created once, saved as two PEM files, loaded to issue.

use std::fmt;
use std::path::Path;

use rcgen::{
    BasicConstraints, BmpString, CertificateParams, DistinguishedName, DnType, DnValue, Ia5String,
    IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, PrintableString, TeletexString,
    PKCS_ECDSA_P256_SHA256,
};
use x509_cert::der::{Decode, DecodePem, Encode, Tag, Tagged};
use x509_cert::ext::pkix::{BasicConstraints as X509BasicConstraints, SubjectKeyIdentifier};
use x509_cert::name::Name;
use x509_cert::Certificate;

use crate::files::{read_text, write_atomically, PRIVATE_MODE, PUBLIC_MODE};
use crate::spec::{CertSpec, IssuedCert, PrivateKeyPem};
use crate::PkiError;

/// The CA certificate's file name in a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key's file name in a CA directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// Lifetime of a new CA: ten years, so a dev CA never expires under a running stack.
pub const CA_VALIDITY_DAYS: i64 = 3650;

/// A CA that issues ECDSA P-256 leaf certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: Vec<u8>,
    subject: String,
    /// rcgen signs with an issuer `Certificate`: this one carries the CA's exact subject
    /// and key identifier. For a loaded CA it is a re-signed stand-in, checked to have
    /// the same subject as `cert_der`, so issued certificates chain to the saved file.
    issuer: rcgen::Certificate,
    key: KeyPair,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new self-signed CA named `CN=common_name`, valid for [`CA_VALIDITY_DAYS`] days.
    pub fn create(common_name: &str) -> Result<Self, PkiError> {
        if common_name.is_empty() {
            return Err(PkiError::InvalidSpec("the CA common name is empty".into()));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params(DistinguishedName::new(), KeyIdMethod::Sha256);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        (params.not_before, params.not_after) = CertSpec::validity_days(CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key)?;
        let subject = Certificate::from_der(cert.der())
            .map(|c| c.tbs_certificate.subject.to_string())
            .map_err(|e| PkiError::InvalidSpec(format!("CA subject {common_name:?}: {e}")))?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            subject,
            issuer: cert,
            key,
        })
    }

    /// Loads `ca.pem` and `ca-key.pem` from `dir`. The certificate must be a CA, the key
    /// ECDSA P-256 and the key must belong to the certificate.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let bad_cert = |reason: String| PkiError::BadFile {
            path: cert_path.clone(),
            reason,
        };
        let cert_pem = read_text(&cert_path)?;
        let key_pem = PrivateKeyPem::new(read_text(&key_path)?);

        let cert = Certificate::from_pem(cert_pem.as_bytes())
            .map_err(|e| bad_cert(format!("not a PEM certificate: {e}")))?;
        let tbs = &cert.tbs_certificate;
        match tbs.get::<X509BasicConstraints>() {
            Ok(Some((_, bc))) if bc.ca => {}
            Ok(_) => {
                return Err(bad_cert(
                    "not a CA certificate (no basicConstraints CA:TRUE)".into(),
                ))
            }
            Err(e) => return Err(bad_cert(format!("unreadable basicConstraints: {e}"))),
        }
        let key = KeyPair::from_pem(key_pem.expose()).map_err(|e| PkiError::BadFile {
            path: key_path.clone(),
            reason: format!("not a PKCS#8 PEM private key: {e}"),
        })?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(PkiError::BadFile {
                path: key_path,
                reason: "the CA key must be ECDSA P-256".into(),
            });
        }
        if tbs.subject_public_key_info.subject_public_key.raw_bytes() != key.public_key_raw() {
            return Err(PkiError::BadFile {
                path: key_path,
                reason: format!("this key does not belong to {}", cert_path.display()),
            });
        }
        // Reuse the CA's own key identifier so issued certificates' authorityKeyIdentifier
        // points at it, whoever created the CA.
        let key_id = match tbs.get::<SubjectKeyIdentifier>() {
            Ok(Some((_, ski))) => KeyIdMethod::PreSpecified(ski.0.as_bytes().to_vec()),
            Ok(None) => KeyIdMethod::Sha256,
            Err(e) => return Err(bad_cert(format!("unreadable subjectKeyIdentifier: {e}"))),
        };
        let dn = rcgen_name(&tbs.subject).map_err(&bad_cert)?;
        let issuer = ca_params(dn, key_id).self_signed(&key)?;
        let reissued = Certificate::from_der(issuer.der())
            .map_err(|e| bad_cert(format!("cannot reproduce the CA: {e}")))?;
        if reissued.tbs_certificate.subject.to_der().ok() != tbs.subject.to_der().ok() {
            return Err(bad_cert(
                "the CA subject cannot be reproduced byte for byte".into(),
            ));
        }
        Ok(Self {
            subject: tbs.subject.to_string(),
            cert_der: cert
                .to_der()
                .map_err(|e| bad_cert(format!("cannot re-encode: {e}")))?,
            cert_pem,
            issuer,
            key,
        })
    }

    /// Writes `ca.pem` (0644) and `ca-key.pem` (0600) into `dir`, creating it. Refuses to
    /// replace an existing CA: its key may have signed certificates still in use.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(|error| PkiError::Io {
            path: dir.to_path_buf(),
            error,
        })?;
        for name in [CA_CERT_FILE, CA_KEY_FILE] {
            let path = dir.join(name);
            if path.exists() {
                return Err(PkiError::AlreadyExists(path));
            }
        }
        let key_pem = PrivateKeyPem::new(self.key.serialize_pem());
        write_atomically(
            &dir.join(CA_KEY_FILE),
            key_pem.expose().as_bytes(),
            PRIVATE_MODE,
        )?;
        write_atomically(
            &dir.join(CA_CERT_FILE),
            self.cert_pem.as_bytes(),
            PUBLIC_MODE,
        )
    }

    /// Loads the CA in `dir`, or creates and saves one named `common_name` when `dir` has
    /// neither file. The flag says whether it was created.
    pub fn load_or_create(dir: &Path, common_name: &str) -> Result<(Self, bool), PkiError> {
        let cert = dir.join(CA_CERT_FILE);
        let key = dir.join(CA_KEY_FILE);
        match (cert.exists(), key.exists()) {
            (true, true) => Ok((Self::load(dir)?, false)),
            (false, false) => {
                let ca = Self::create(common_name)?;
                ca.save(dir)?;
                Ok((ca, true))
            }
            (present, _) => {
                let (found, missing) = if present { (cert, key) } else { (key, cert) };
                Err(PkiError::BadFile {
                    path: missing,
                    reason: format!("missing, but {} exists", found.display()),
                })
            }
        }
    }

    /// Issues a certificate with a fresh ECDSA P-256 key.
    pub fn issue(&self, spec: &CertSpec) -> Result<IssuedCert, PkiError> {
        let params = spec.to_params()?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: PrivateKeyPem::new(key.serialize_pem()),
        })
    }

    /// The CA certificate, PEM (what clients and servers trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA subject, RFC 4514 (`CN=…`): the issuer of every certificate it signs.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// A CA certificate's parameters: may sign certificates, not other CAs.
fn ca_params(dn: DistinguishedName, key_id: KeyIdMethod) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.key_identifier_method = key_id;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// An X.509 name as rcgen's: one attribute per RDN, each type once, string types kept.
fn rcgen_name(name: &Name) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    for rdn in &name.0 {
        let [atv] = rdn.0.as_slice() else {
            return Err("multi-valued RDNs in the CA subject are not supported".into());
        };
        let arcs: Vec<u64> = atv.oid.arcs().map(u64::from).collect();
        let ty = DnType::from_oid(&arcs);
        if dn.get(&ty).is_some() {
            return Err(format!(
                "attribute {} appears twice in the CA subject",
                atv.oid
            ));
        }
        let bytes = atv.value.value();
        let text = || std::str::from_utf8(bytes).map_err(|e| e.to_string());
        let bad = |e: rcgen::Error| e.to_string();
        let value = match atv.value.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
            Tag::PrintableString => {
                DnValue::PrintableString(PrintableString::try_from(text()?).map_err(bad)?)
            }
            Tag::Ia5String => DnValue::Ia5String(Ia5String::try_from(text()?).map_err(bad)?),
            Tag::TeletexString => {
                DnValue::TeletexString(TeletexString::try_from(text()?).map_err(bad)?)
            }
            Tag::BmpString => {
                DnValue::BmpString(BmpString::from_utf16be(bytes.to_vec()).map_err(bad)?)
            }
            other => {
                return Err(format!(
                    "attribute {} has unsupported type {other}",
                    atv.oid
                ))
            }
        };
        dn.push(ty, value);
    }
    Ok(dn)
}
