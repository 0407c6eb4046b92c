//! Our client against the real PyKMIP 0.11 server, over mutual TLS, in KMIP 1.2, 1.4
//! and 2.0: the key lifecycle (create, get, attributes, activate, encrypt/decrypt, locate,
//! revoke, destroy) and register/get of client-supplied key material.
//!
//! The server runs as a child process (`tests/pykmip/run_server.py`) with the Python named by
//! `PYKMIP_PYTHON` (`make test` sets it), else `<repo>/.venv/bin/python`; with neither the
//! tests print why and pass without running.

mod support;

use std::ffi::OsString;
use std::fmt::Debug;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use kmip::client::{tls, ClientError};
use kmip::message::attributes::Attributes;
use kmip::message::{
    CryptographicParameters, KeyBlock, KeyMaterial, KeyValue, ManagedObject, Name, SecretData,
    SymmetricKey, UniqueIdentifier,
};
use kmip::spec::{
    CryptographicAlgorithm, CryptographicUsageMask, KeyFormatType, ObjectType, Operation,
    QueryFunction, ResultReason, RevocationReasonCode, SecretDataType, State,
};
use kmip::{ProtocolVersion, Tag};
use rcgen::ExtendedKeyUsagePurpose;
use support::{Pki, TlsClient};

/// How long the server may take to start listening.
const STARTUP_BUDGET: Duration = Duration::from_secs(20);
/// Per-request timeout of the client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-test bound.
const TEST_BUDGET: Duration = Duration::from_secs(90);

/// The versions PyKMIP 0.11's server answers in Discover Versions, preferred first.
const PYKMIP_VERSIONS: [ProtocolVersion; 6] = [
    ProtocolVersion::V2_0,
    ProtocolVersion::V1_4,
    ProtocolVersion::V1_3,
    ProtocolVersion::V1_2,
    ProtocolVersion::V1_1,
    ProtocolVersion::V1_0,
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("kmip/ has a parent")
        .to_path_buf()
}

/// The Python with PyKMIP, if this machine has one.
fn pykmip_python() -> Option<OsString> {
    if let Some(python) = std::env::var_os("PYKMIP_PYTHON") {
        return Some(python);
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        return Some(venv.into_os_string());
    }
    println!(
        "skipped: PYKMIP_PYTHON is not set and {} does not exist \
         (run scripts/bootstrap.sh, or `make test`)",
        venv.display()
    );
    None
}

/// A PyKMIP server child process. Dropping it closes the launcher's stdin, which makes the
/// launcher kill its whole process group (the server and its helper processes).
struct PyKmipServer {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    pki: Pki,
}

impl PyKmipServer {
    /// Starts a server and waits until it listens. The free port is found by binding port 0
    /// and releasing it, so another process may take it first: then the server cannot bind,
    /// and it is started again on another port.
    fn start(python: &OsString) -> Self {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            match Self::spawn(python) {
                Ok(server) => return server,
                Err(why) if attempt < ATTEMPTS && why.contains("failed to bind") => continue,
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn(python: &OsString) -> Result<Self, String> {
        let pki = Pki::generate();
        let policies = pki.path("policies");
        std::fs::create_dir(&policies).expect("policy directory");
        // A free port: bind port 0, note it, release it for the server.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = format!(
            "[server]\n\
             hostname=127.0.0.1\n\
             port={port}\n\
             certificate_path={cert}\n\
             key_path={key}\n\
             ca_path={ca}\n\
             auth_suite=TLS1.2\n\
             policy_path={policies}\n\
             enable_tls_client_auth=True\n\
             tls_cipher_suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 \
             TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n\
             logging_level=DEBUG\n\
             database_path={db}\n",
            cert = pki.path("server.pem").display(),
            key = pki.path("server-key.pem").display(),
            ca = pki.path("ca.pem").display(),
            policies = policies.display(),
            db = pki.path("pykmip.db").display(),
        );
        let config_path = pki.write("server.conf", &config);
        let output = std::fs::File::create(pki.path("server.out")).expect("output file");
        let mut child = Command::new(python)
            .arg(repo_root().join("kmip/tests/pykmip/run_server.py"))
            .arg(&config_path)
            .arg(pki.path("server.log"))
            .stdin(Stdio::piped())
            .stdout(output.try_clone().expect("output file"))
            .stderr(output)
            .spawn()
            .map_err(|e| format!("start {python:?}: {e}"))?;
        let stdin = child.stdin.take();
        let mut server = Self {
            child,
            stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pki,
        };
        server.wait_until_listening()?;
        Ok(server)
    }

    /// Waits until the launcher says the server is serving (it bound the port) and a TCP
    /// connect succeeds, the server exits, or [`STARTUP_BUDGET`] passes. A connect alone is
    /// not enough: between this test releasing the free port and PyKMIP binding it, another
    /// test's listener may take it, and a connect would reach that one.
    fn wait_until_listening(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let serving = support::read_lossy(&self.pki.path("server.out"))
                .lines()
                .any(|line| line == "serving");
            if serving && TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the PyKMIP server exited ({status}) before listening\n{}",
                    self.diagnostics()
                ));
            }
            if started.elapsed() > STARTUP_BUDGET {
                return Err(format!(
                    "the PyKMIP server is not listening on {} after {STARTUP_BUDGET:?}\n{}",
                    self.addr,
                    self.diagnostics()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The launcher's output and the tail of the server log, for failure messages.
    fn diagnostics(&self) -> String {
        let log = support::read_lossy(&self.pki.path("server.log"));
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(150)..].join("\n");
        format!(
            "--- launcher output ---\n{}\n--- server.log (last 150 lines) ---\n{tail}",
            support::read_lossy(&self.pki.path("server.out"))
        )
    }

    async fn client(&self, version: ProtocolVersion) -> TlsClient {
        let connector = self.pki.connector();
        let mut client =
            support::connect_with_version(&self.addr.to_string(), "localhost", &connector, version)
                .await
                .unwrap_or_else(|e| panic!("connect: {e:?}\n{}", self.diagnostics()));
        client.set_timeout(REQUEST_TIMEOUT);
        client
    }

    /// The value of a request that must succeed; on failure, panics with the server log.
    fn ok<T>(&self, what: &str, result: Result<T, ClientError>) -> T {
        result.unwrap_or_else(|e| panic!("{what}: {e:?}\n{}", self.diagnostics()))
    }

    /// The error of a request that must fail; otherwise panics with the server log.
    fn err<T: Debug>(&self, what: &str, result: Result<T, ClientError>) -> ClientError {
        match result {
            Err(e) => e,
            Ok(v) => panic!("{what} should fail, got {v:?}\n{}", self.diagnostics()),
        }
    }

    fn check(&self, what: &str, condition: bool) {
        if !condition {
            panic!("{what}\n{}", self.diagnostics());
        }
    }

    fn check_eq<T: PartialEq + Debug>(&self, what: &str, left: T, right: T) {
        if left != right {
            panic!("{what}: {left:?} != {right:?}\n{}", self.diagnostics());
        }
    }
}

impl Drop for PyKmipServer {
    fn drop(&mut self) {
        // End of stdin: the launcher kills its process group.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_BUDGET, f)
        .await
        .expect("test exceeded its time budget")
}

async fn state(server: &PyKmipServer, client: &mut TlsClient, uid: &str) -> Option<State> {
    let attrs = server.ok(
        "Get Attributes (State)",
        client.get_attributes(uid, &[Tag::STATE]).await,
    );
    attrs.state().expect("State decodes")
}

/// Create → Get → Get Attributes → Activate → Encrypt/Decrypt → Locate → Revoke → Destroy.
async fn key_lifecycle(version: ProtocolVersion) {
    let Some(python) = pykmip_python() else {
        return;
    };
    let server = PyKmipServer::start(&python);
    let mut c = server.client(version).await;
    let s = &server;

    let versions = s.ok("Discover Versions", c.discover_versions(&[]).await);
    s.check_eq(
        "Discover Versions",
        versions.as_slice(),
        &PYKMIP_VERSIONS[..],
    );
    let only = s.ok("Discover Versions", c.discover_versions(&[version]).await);
    s.check_eq("Discover Versions of our version", only, vec![version]);

    let name = format!("openkcm-test-key-{version}");
    let uid = s.ok("Create", c.create_aes_key(256, Some(&name)).await);
    s.check("Create returns a non-empty identifier", !uid.is_empty());

    let got = s.ok("Get", c.get(&uid).await);
    s.check_eq("Get object type", got.object_type, ObjectType::SymmetricKey);
    s.check_eq(
        "Get identifier",
        &got.unique_identifier,
        &UniqueIdentifier::from(uid.as_str()),
    );
    let block = match &got.object {
        Some(ManagedObject::SymmetricKey(k)) => k.key_block.clone(),
        other => panic!("Get returned {other:?}\n{}", s.diagnostics()),
    };
    s.check_eq("key format", block.key_format_type, KeyFormatType::Raw);
    s.check_eq(
        "key algorithm",
        block.cryptographic_algorithm,
        Some(CryptographicAlgorithm::Aes),
    );
    s.check_eq("key length", block.cryptographic_length, Some(256));
    let key = block.key_bytes().map(<[u8]>::to_vec);
    s.check_eq("key bytes length", key.as_ref().map(Vec::len), Some(32));

    let all = s.ok("Get Attributes (all)", c.get_attributes(&uid, &[]).await);
    s.check_eq(
        "Cryptographic Algorithm attribute",
        all.cryptographic_algorithm().ok().flatten(),
        Some(CryptographicAlgorithm::Aes),
    );
    s.check_eq(
        "Cryptographic Length attribute",
        all.cryptographic_length().ok().flatten(),
        Some(256),
    );
    let names: Vec<String> = all
        .names()
        .expect("Name decodes")
        .into_iter()
        .map(|n| n.value)
        .collect();
    s.check_eq("Name attribute", names, vec![name.clone()]);
    s.check_eq(
        "State before Activate",
        state(s, &mut c, &uid).await,
        Some(State::PreActive),
    );

    s.ok("Activate", c.activate(&uid).await);
    s.check_eq(
        "State after Activate",
        state(s, &mut c, &uid).await,
        Some(State::Active),
    );

    let plaintext = b"OpenKCM says hello to PyKMIP, 0123456789".to_vec();
    let iv = [0x5au8; 16];
    let encrypted = s.ok(
        "Encrypt",
        c.encrypt(
            &uid,
            &plaintext,
            Some(CryptographicParameters::aes_cbc_pkcs5()),
            Some(&iv),
        )
        .await,
    );
    s.check_eq(
        "Encrypt identifier",
        &encrypted.unique_identifier,
        &UniqueIdentifier::from(uid.as_str()),
    );
    let ciphertext = encrypted.data.expect("Encrypt returns Data").to_vec();
    // PKCS#5: padded up to the next whole block.
    s.check_eq(
        "ciphertext length",
        ciphertext.len(),
        plaintext.len() / 16 * 16 + 16,
    );
    s.check(
        "ciphertext differs from plaintext",
        ciphertext[..16] != plaintext[..16],
    );
    let decrypted = s.ok(
        "Decrypt",
        c.decrypt(
            &uid,
            &ciphertext,
            Some(CryptographicParameters::aes_cbc_pkcs5()),
            Some(&iv),
            None,
        )
        .await,
    );
    s.check_eq(
        "Decrypt gives the plaintext back",
        decrypted.to_vec(),
        plaintext.clone(),
    );
    let wrong_iv = s.ok(
        "Decrypt with another IV",
        c.decrypt(
            &uid,
            &ciphertext,
            Some(CryptographicParameters::aes_cbc_pkcs5()),
            Some(&[0u8; 16]),
            None,
        )
        .await,
    );
    s.check(
        "another IV garbles the first block",
        wrong_iv[..16] != plaintext[..16],
    );

    let found = s.ok(
        "Locate by name",
        c.locate(Attributes::new().with(Tag::NAME, &Name::text(&name)), None)
            .await,
    );
    s.check_eq("Locate by name", found, vec![uid.clone()]);
    let none = s.ok(
        "Locate by an unknown name",
        c.locate(
            Attributes::new().with(Tag::NAME, &Name::text("no-such-key")),
            None,
        )
        .await,
    );
    s.check_eq("Locate of an unknown name", none, Vec::<String>::new());

    let refused = s.err("Destroy of an Active key", c.destroy(&uid).await);
    s.check_eq(
        "Destroy of an Active key",
        refused.result_reason(),
        Some(ResultReason::PermissionDenied),
    );

    s.ok(
        "Revoke",
        c.revoke(
            &uid,
            RevocationReasonCode::CessationOfOperation,
            Some("test done"),
        )
        .await,
    );
    s.check_eq(
        "State after Revoke",
        state(s, &mut c, &uid).await,
        Some(State::Deactivated),
    );
    let refused = s.err(
        "Encrypt with a Deactivated key",
        c.encrypt(
            &uid,
            &plaintext,
            Some(CryptographicParameters::aes_cbc_pkcs5()),
            Some(&iv),
        )
        .await,
    );
    s.check_eq(
        "Encrypt with a Deactivated key",
        refused.result_reason(),
        Some(ResultReason::PermissionDenied),
    );

    s.ok("Destroy", c.destroy(&uid).await);
    let gone = s.err("Get after Destroy", c.get(&uid).await);
    s.check_eq(
        "Get after Destroy",
        gone.result_reason(),
        Some(ResultReason::ItemNotFound),
    );
    s.check(
        &format!("Get after Destroy is an Operation error: {gone:?}"),
        matches!(gone, ClientError::Operation { ref message, .. } if message.contains(&uid)),
    );
}

#[tokio::test]
async fn key_lifecycle_kmip_1_2() {
    bounded(key_lifecycle(ProtocolVersion::V1_2)).await;
}

#[tokio::test]
async fn key_lifecycle_kmip_1_4() {
    bounded(key_lifecycle(ProtocolVersion::V1_4)).await;
}

#[tokio::test]
async fn key_lifecycle_kmip_2_0() {
    bounded(key_lifecycle(ProtocolVersion::V2_0)).await;
}

/// Registers a Secret Data (password) and a 256-bit AES key, in each version, and gets
/// them back byte for byte.
#[tokio::test]
async fn registered_objects_come_back_byte_identical() {
    bounded(async {
        let Some(python) = pykmip_python() else {
            return;
        };
        let server = PyKmipServer::start(&python);
        let s = &server;
        for version in [
            ProtocolVersion::V1_2,
            ProtocolVersion::V1_4,
            ProtocolVersion::V2_0,
        ] {
            let mut c = s.client(version).await;

            let secret = format!("correct horse battery staple ({version})").into_bytes();
            let secret_object = ManagedObject::SecretData(SecretData {
                secret_data_type: SecretDataType::Password,
                key_block: KeyBlock {
                    key_format_type: KeyFormatType::Opaque,
                    key_compression_type: None,
                    key_value: Some(KeyValue::Plain {
                        key_material: KeyMaterial::Bytes(secret.clone().into()),
                        attributes: None,
                    }),
                    cryptographic_algorithm: None,
                    cryptographic_length: None,
                    key_wrapping_data: None,
                },
            });
            let attrs = Attributes::new()
                .with(
                    Tag::CRYPTOGRAPHIC_USAGE_MASK,
                    &CryptographicUsageMask::VERIFY,
                )
                .with(Tag::NAME, &Name::text(format!("secret-{version}")));
            let uid = s.ok(
                &format!("Register Secret Data ({version})"),
                c.register(secret_object, attrs).await,
            );
            let got = s.ok(&format!("Get Secret Data ({version})"), c.get(&uid).await);
            match got.object {
                Some(ManagedObject::SecretData(d)) => {
                    s.check_eq(
                        "Secret Data Type",
                        d.secret_data_type,
                        SecretDataType::Password,
                    );
                    s.check_eq(
                        &format!("Secret Data bytes ({version})"),
                        d.key_block.key_bytes(),
                        Some(secret.as_slice()),
                    );
                }
                other => panic!("Get of Secret Data returned {other:?}\n{}", s.diagnostics()),
            }

            let key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
            let key_object = ManagedObject::SymmetricKey(SymmetricKey {
                key_block: KeyBlock::raw(key.clone(), Some(CryptographicAlgorithm::Aes), Some(256)),
            });
            let attrs = Attributes::new().with(
                Tag::CRYPTOGRAPHIC_USAGE_MASK,
                &CryptographicUsageMask(
                    CryptographicUsageMask::ENCRYPT.0 | CryptographicUsageMask::DECRYPT.0,
                ),
            );
            let uid = s.ok(
                &format!("Register Symmetric Key ({version})"),
                c.register(key_object, attrs).await,
            );
            let got = s.ok(&format!("Get Symmetric Key ({version})"), c.get(&uid).await);
            let block = got
                .object
                .as_ref()
                .and_then(ManagedObject::key_block)
                .unwrap_or_else(|| panic!("Get returned {got:?}\n{}", s.diagnostics()));
            s.check_eq(
                &format!("Symmetric Key bytes ({version})"),
                block.key_bytes(),
                Some(key.as_slice()),
            );
            s.check_eq(
                "Symmetric Key algorithm",
                block.cryptographic_algorithm,
                Some(CryptographicAlgorithm::Aes),
            );
        }
    })
    .await;
}

/// Query answers the operations PyKMIP implements and its vendor identification, in every
/// version we speak to it.
#[tokio::test]
async fn query_lists_the_operations_pykmip_supports() {
    bounded(async {
        let Some(python) = pykmip_python() else {
            return;
        };
        let server = PyKmipServer::start(&python);
        let s = &server;
        for version in [
            ProtocolVersion::V1_2,
            ProtocolVersion::V1_4,
            ProtocolVersion::V2_0,
        ] {
            let mut c = s.client(version).await;
            let query = s.ok(
                &format!("Query ({version})"),
                c.query(&[
                    QueryFunction::QueryOperations,
                    QueryFunction::QueryObjects,
                    QueryFunction::QueryServerInformation,
                ])
                .await,
            );
            for op in [
                Operation::Create,
                Operation::Register,
                Operation::Get,
                Operation::Activate,
                Operation::Revoke,
                Operation::Destroy,
                Operation::Locate,
                Operation::Encrypt,
                Operation::Decrypt,
                Operation::Query,
                Operation::DiscoverVersions,
            ] {
                s.check(
                    &format!("Query ({version}) lists {op:?}: {:?}", query.operations),
                    query.operations.contains(&op),
                );
            }
            // PyKMIP answers Query Objects with an empty list.
            s.check_eq(
                "Query Objects",
                query.object_types,
                Vec::<ObjectType>::new(),
            );
            s.check_eq(
                "Vendor Identification",
                query.vendor_identification.as_deref(),
                Some("PyKMIP 0.11.0 Software Server"),
            );
        }
    })
    .await;
}

/// With `enable_tls_client_auth=True` PyKMIP wants a client certificate marked for client
/// authentication: one without extended key usages passes the handshake but every request
/// is refused; one marked only for server authentication fails the handshake itself.
#[tokio::test]
async fn pykmip_refuses_client_certificates_not_marked_for_client_auth() {
    bounded(async {
        let Some(python) = pykmip_python() else {
            return;
        };
        let server = PyKmipServer::start(&python);
        let s = &server;
        let addr = s.addr.to_string();
        let connector_for = |leaf: &support::Leaf| {
            tls::connector(
                vec![s.pki.ca.cert_der()],
                vec![leaf.cert_der.clone()],
                leaf.key(),
            )
            .expect("connector")
        };

        let no_eku = s.pki.ca.issue("no-eku-client", &[], Vec::new());
        let mut c = support::connect_with_version(
            &addr,
            "localhost",
            &connector_for(&no_eku),
            ProtocolVersion::V1_4,
        )
        .await
        .unwrap_or_else(|e| panic!("handshake: {e:?}\n{}", s.diagnostics()));
        c.set_timeout(REQUEST_TIMEOUT);
        let refused = s.err(
            "Discover Versions without clientAuth",
            c.discover_versions(&[]).await,
        );
        s.check_eq(
            "request with a certificate without clientAuth",
            refused.result_reason(),
            Some(ResultReason::AuthenticationNotSuccessful),
        );

        let server_only = s.pki.ca.issue(
            "server-only-client",
            &[],
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        );
        let outcome = async {
            let mut c = support::connect_with_version(
                &addr,
                "localhost",
                &connector_for(&server_only),
                ProtocolVersion::V1_4,
            )
            .await?;
            c.set_timeout(REQUEST_TIMEOUT);
            c.discover_versions(&[]).await
        }
        .await;
        s.check(
            &format!("a serverAuth-only client certificate fails the handshake: {outcome:?}"),
            matches!(outcome, Err(ClientError::Io(_))),
        );

        // The proper client certificate still works, and PyKMIP took its CN as the user.
        let mut c = s.client(ProtocolVersion::V1_4).await;
        s.ok("Discover Versions", c.discover_versions(&[]).await);
        let log = support::read_lossy(&s.pki.path("server.log"));
        s.check(
            "PyKMIP identifies the client by its certificate's CN",
            log.contains(&format!("Session client identity: {}", support::CLIENT_CN)),
        );
    })
    .await;
}
