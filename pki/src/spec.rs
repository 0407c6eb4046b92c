//! What to put in a certificate, and what comes out: the PEM certificate and its key.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Ia5String, IsCa,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::files::{write_atomically, PRIVATE_MODE, PUBLIC_MODE};
use crate::PkiError;

/// Default lifetime of an issued certificate: a year, long enough for a dev stack and
/// short enough that a forgotten one expires.
pub const DEFAULT_VALIDITY_DAYS: i64 = 365;

/// How far back `not_before` starts, so a peer whose clock lags a little accepts a
/// certificate issued just now.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// Most organizationalUnit values one certificate can carry. rcgen keeps one value per
/// attribute type; the second OU is written under the same OID as a custom attribute type.
/// Two is enough to test rules against certificates with several OUs.
pub const MAX_ORGANIZATIONAL_UNITS: usize = 2;

/// id-at-organizationalUnitName, for the second OU (see [`MAX_ORGANIZATIONAL_UNITS`]).
const ORGANIZATIONAL_UNIT_OID: [u64; 4] = [2, 5, 4, 11];

/// The contents of a certificate to issue.
///
/// ```
/// let spec = pki::CertSpec {
///     organizational_units: vec!["tenant-a".into()],
///     client: true,
///     ..pki::CertSpec::new("mongodb.tenant-a.svc")
/// };
/// # let _ = spec;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSpec {
    pub common_name: String,
    pub organization: Option<String>,
    /// At most [`MAX_ORGANIZATIONAL_UNITS`].
    pub organizational_units: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub uris: Vec<String>,
    /// Extended key usage serverAuth.
    pub server: bool,
    /// Extended key usage clientAuth.
    pub client: bool,
    /// `not_before`, `not_after`.
    pub validity: (OffsetDateTime, OffsetDateTime),
}

impl CertSpec {
    /// A certificate for `common_name` with nothing else: no SAN, no usage yet (set
    /// `client` and/or `server`), valid from an hour ago for [`DEFAULT_VALIDITY_DAYS`].
    pub fn new(common_name: impl Into<String>) -> Self {
        Self {
            common_name: common_name.into(),
            organization: None,
            organizational_units: Vec::new(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            uris: Vec::new(),
            server: false,
            client: false,
            validity: Self::validity_days(DEFAULT_VALIDITY_DAYS),
        }
    }

    /// From an hour ago until `days` days from now.
    pub fn validity_days(days: i64) -> (OffsetDateTime, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        (now - CLOCK_SKEW, now + Duration::days(days))
    }

    /// The rcgen parameters for this leaf certificate, every field checked.
    pub(crate) fn to_params(&self) -> Result<CertificateParams, PkiError> {
        let invalid = |reason: String| Err(PkiError::InvalidSpec(reason));
        if self.common_name.is_empty() {
            return invalid("the common name is empty".into());
        }
        if !self.server && !self.client {
            return invalid("neither server nor client usage requested".into());
        }
        if self.organizational_units.len() > MAX_ORGANIZATIONAL_UNITS {
            return invalid(format!(
                "{} organizational units; at most {MAX_ORGANIZATIONAL_UNITS} are supported",
                self.organizational_units.len()
            ));
        }
        let (not_before, not_after) = self.validity;
        if not_before >= not_after {
            return invalid(format!(
                "validity ends ({not_after}) before it starts ({not_before})"
            ));
        }

        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.distinguished_name = self.subject();
        // No basicConstraints extension at all: PyKMIP rejects an explicit CA:FALSE.
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if self.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if self.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        for dns in &self.dns_names {
            let name = Ia5String::try_from(dns.as_str())
                .map_err(|e| PkiError::InvalidSpec(format!("DNS name {dns:?}: {e}")))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in &self.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for uri in &self.uris {
            let name = Ia5String::try_from(uri.as_str())
                .map_err(|e| PkiError::InvalidSpec(format!("URI {uri:?}: {e}")))?;
            params.subject_alt_names.push(SanType::URI(name));
        }
        Ok(params)
    }

    /// O, OU…, CN: most significant first, so it reads `CN=…,OU=…,O=…` in RFC 4514.
    fn subject(&self) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        if let Some(o) = &self.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        let types = [
            DnType::OrganizationalUnitName,
            DnType::CustomDnType(ORGANIZATIONAL_UNIT_OID.to_vec()),
        ];
        for (ty, ou) in types.into_iter().zip(&self.organizational_units) {
            dn.push(ty, ou.as_str());
        }
        dn.push(DnType::CommonName, self.common_name.as_str());
        dn
    }
}

/// A PEM private key; zeroized on drop and never printed.
#[derive(Clone)]
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    pub(crate) fn new(pem: String) -> Self {
        Self(Zeroizing::new(pem))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// An issued certificate and its private key.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: PrivateKeyPem,
}

impl IssuedCert {
    /// Writes the certificate (mode 0644) and the key (mode 0600), each replaced atomically.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<(), PkiError> {
        write_atomically(key_path, self.key_pem.expose().as_bytes(), PRIVATE_MODE)?;
        write_atomically(cert_path, self.cert_pem.as_bytes(), PUBLIC_MODE)
    }
}
