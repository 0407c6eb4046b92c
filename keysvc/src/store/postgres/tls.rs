//! TLS to PostgreSQL: the libpq URL parameters keysvc takes, and the check that refuses,
//! before anything connects, what the driver (sqlx on rustls) would do differently from
//! libpq or not at all.
//!
//! ```text
//! postgres://ROLE@HOST:PORT/DB?sslmode=verify-full&sslrootcert=CA&sslcert=CRT&sslkey=KEY
//!      (or PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY when the URL does not say)
//!   check_url ──► sslmode known, not verify-ca, not require+sslrootcert;
//!                 sslcert with sslkey; every file readable and parsable PEM
//!   connect   ──► sqlx reads the three files at every TLS handshake: a renewed
//!                 certificate or key is used by the next new connection, no restart
//! ```
//!
//! Why refuse two of libpq's modes: the driver verifies a server certificate against the
//! `sslrootcert` bundle *plus* the public web roots (webpki-roots), and in `require` mode
//! it verifies nothing, `sslrootcert` or not. So `verify-ca` would accept any server with a
//! publicly trusted certificate for any name, and `require&sslrootcert=…` (which libpq
//! treats as `verify-ca`) would silently verify nothing. `verify-full` checks the name too,
//! which a public CA certifies only for its owner: name the server by a cluster-internal
//! name (`*.svc`) or an address no public CA certifies.

use std::path::Path;

use tlsmaterial::pem;

/// The `sslmode` values keysvc accepts, as libpq spells them.
const MODES: [&str; 5] = ["disable", "allow", "prefer", "require", "verify-full"];

/// The TLS parameters of one URL, each from the URL or else from libpq's variable.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParameters {
    mode: Option<String>,
    root_cert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// Checks the TLS parameters of the PostgreSQL URL `url` (and of `PGSSL*` variables it
/// leaves to the environment): refuses what the driver would not honour as libpq does, and
/// files that cannot be read or parsed. The message names the parameter and the file,
/// never the URL.
pub fn check_url(url: &str) -> Result<(), String> {
    check_url_with(url, |name| std::env::var(name).ok())
}

fn check_url_with(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
    let mut found = TlsParameters::default();
    // sqlx reads the pairs in order, a later one overriding an earlier one; so here.
    for (name, value) in parsed.query_pairs() {
        let value = value.into_owned();
        match name.as_ref() {
            "sslmode" | "ssl-mode" => found.mode = Some(value),
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => found.root_cert = Some(value),
            "sslcert" | "ssl-cert" => found.cert = Some(value),
            "sslkey" | "ssl-key" => found.key = Some(value),
            "sslpassword" => {
                return Err(
                    "sslpassword: encrypted private keys are not supported; give \
                            sslkey an unencrypted PKCS#8, PKCS#1 or SEC1 key file"
                        .into(),
                )
            }
            other if other.starts_with("ssl") => {
                return Err(format!(
                    "{other}: not supported by keysvc's PostgreSQL driver (supported: sslmode, \
                     sslrootcert, sslcert, sslkey)"
                ))
            }
            _ => {}
        }
    }
    let params = TlsParameters {
        mode: found.mode.or_else(|| env("PGSSLMODE")),
        root_cert: found.root_cert.or_else(|| env("PGSSLROOTCERT")),
        cert: found.cert.or_else(|| env("PGSSLCERT")),
        key: found.key.or_else(|| env("PGSSLKEY")),
    };
    check(&params)
}

fn check(params: &TlsParameters) -> Result<(), String> {
    let mode = params.mode.as_deref().map(str::to_ascii_lowercase);
    match mode.as_deref() {
        None => {}
        Some("verify-ca") => {
            return Err(
                "sslmode=verify-ca is not supported: keysvc's driver trusts the \
                        public web roots besides sslrootcert, so without the host name check \
                        any publicly certified server would pass; use sslmode=verify-full"
                    .into(),
            )
        }
        Some("require") if params.root_cert.is_some() => {
            return Err(
                "sslmode=require with sslrootcert: libpq would verify the server \
                        against sslrootcert, keysvc's driver verifies nothing in require mode; \
                        use sslmode=verify-full"
                    .into(),
            )
        }
        Some(mode) if MODES.contains(&mode) => {}
        Some(other) => {
            return Err(format!(
                "sslmode={other}: expected one of {}",
                MODES.join(", ")
            ))
        }
    }
    match (&params.cert, &params.key) {
        (Some(_), None) => return Err("sslcert without sslkey: give both or neither".into()),
        (None, Some(_)) => return Err("sslkey without sslcert: give both or neither".into()),
        _ => {}
    }
    if let Some(root_cert) = &params.root_cert {
        file("sslrootcert", root_cert, |path| {
            pem::certificates(path).map(drop)
        })?;
    }
    if let Some(cert) = &params.cert {
        file("sslcert", cert, |path| pem::certificates(path).map(drop))?;
    }
    if let Some(key) = &params.key {
        file("sslkey", key, |path| pem::private_key(path).map(drop))?;
    }
    Ok(())
}

/// One file parameter: a path (never inline PEM, which the driver would also take: it could
/// not be renewed, and a key would sit in the URL), readable and parsable now.
fn file(
    name: &str,
    value: &str,
    parse: impl Fn(&Path) -> Result<(), pem::PemError>,
) -> Result<(), String> {
    if value.trim_start().starts_with("-----BEGIN") {
        return Err(format!(
            "{name}: give the path of a PEM file, not the PEM text itself"
        ));
    }
    parse(Path::new(value)).map_err(|e| format!("{name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(url: &str) -> Result<(), String> {
        check_url_with(url, |_| None)
    }

    #[test]
    fn modes_as_libpq_spells_them_are_accepted_except_verify_ca() {
        for mode in ["disable", "allow", "prefer", "require", "VERIFY-FULL"] {
            assert_eq!(checked(&format!("postgres://a@h/d?sslmode={mode}")), Ok(()));
        }
        let refused = checked("postgres://a@h/d?sslmode=verify-ca").unwrap_err();
        assert!(refused.contains("verify-full"), "{refused}");
        let refused = checked("postgres://a@h/d?sslmode=strict").unwrap_err();
        assert!(refused.contains("expected one of"), "{refused}");
    }

    #[test]
    fn require_with_a_root_certificate_is_refused_as_it_would_verify_nothing() {
        let refused =
            checked("postgres://a@h/d?sslmode=require&sslrootcert=/nonexistent").unwrap_err();
        assert!(refused.contains("verifies nothing"), "{refused}");
        // The environment's root certificate counts as the URL's would.
        let refused = check_url_with("postgres://a@h/d?sslmode=require", |name| {
            (name == "PGSSLROOTCERT").then(|| "/ca.pem".to_owned())
        })
        .unwrap_err();
        assert!(refused.contains("verifies nothing"), "{refused}");
    }

    #[test]
    fn certificate_and_key_go_together_and_must_be_readable() {
        let refused = checked("postgres://a@h/d?sslcert=/c.pem").unwrap_err();
        assert!(refused.contains("without sslkey"), "{refused}");
        let refused = checked("postgres://a@h/d?sslkey=/k.pem").unwrap_err();
        assert!(refused.contains("without sslcert"), "{refused}");
        let refused =
            checked("postgres://a@h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
                .unwrap_err();
        assert!(
            refused.starts_with("sslrootcert: cannot read /nonexistent/ca.pem"),
            "{refused}"
        );
    }

    #[test]
    fn unsupported_ssl_parameters_and_inline_pem_are_refused() {
        for (url, says) in [
            ("postgres://a@h/d?sslpassword=x", "encrypted private keys"),
            ("postgres://a@h/d?sslcrl=/crl.pem", "sslcrl: not supported"),
            (
                "postgres://a@h/d?sslrootcert=-----BEGIN%20CERTIFICATE-----",
                "not the PEM text",
            ),
        ] {
            let refused = checked(url).unwrap_err();
            assert!(refused.contains(says), "{url}: {refused}");
            assert!(!refused.contains("postgres://"), "{refused}");
        }
    }

    #[test]
    fn files_are_parsed_not_just_opened() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").expect("write");
        let refused = checked(&format!(
            "postgres://a@h/d?sslmode=verify-full&sslrootcert={}",
            not_pem.display()
        ))
        .unwrap_err();
        assert!(refused.starts_with("sslrootcert: "), "{refused}");
    }
}
