//! A PostgreSQL cluster of a test's own that accepts only TLS with client certificates, for
//! tests of keysvc's TLS to PostgreSQL and of PostgreSQL outages (stop, start, restart).
//!
//! ```text
//! TlsCluster::new()                      (~1-2 s: initdb, certificates, pg_ctl start -w)
//!   /tmp/openkcm-pg-XXXX/  owned by postgres, removed on drop
//!     data/                initdb; server.crt, server.key (0600), client-ca.pem
//!     run/.s.PGSQL.PORT    the admin's way in: `local all postgres trust`
//!     pki-N/               CA N (server and client certificates), ROLE.pem, ROLE-key.pem
//!     postgres.log
//!   127.0.0.1:PORT         `hostssl all all 127.0.0.1/32 cert`, no `host` line:
//!                          TLS, a client certificate of the trusted CA, CN = the role
//! ```
//!
//! The machine's PostgreSQL binaries are used (`OPENKCM_TEST_PG_BIN`, else the directory of
//! `initdb` on the PATH, else the newest `/usr/lib/postgresql/*/bin`), run as the `postgres`
//! user through `runuser` when the test runs as root (PostgreSQL refuses to run as root),
//! as the test's own user otherwise.
//!
//! Typical use (see `keysvc/tests/store_postgres_tls.rs`, `tests/keysvc_postgres_tls.rs`):
//!
//! ```ignore
//! let cluster = TlsCluster::new();
//! let db = cluster.create_database("ks");                 // database + plain login role
//! keysvc::store::postgres::migrate(&cluster.owner_url(&db), &db.role).await?;
//! let url = cluster.keysvc_url(&db);                      // verify-full + client cert
//! cluster.stop(); /* outage */ cluster.start();           // same port, same data
//! cluster.restart_fast();                                 // pg_ctl restart -m fast
//! ```
//!
//! Every method panics on failure, with the tail of the server's log: a failed set-up is a
//! failed test. The lifecycle methods block (pg_ctl) and may be called from async tests;
//! they take milliseconds to a second. Dropping the cluster stops the server
//! (`pg_ctl stop -m immediate`) and removes its directory; if the test process dies
//! without dropping it (SIGKILL, abort), a watchdog process does the same.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pki::CertSpec;
use sqlx::Connection as _;

use crate::certs::{self, TestPki, CA_FILE};
use crate::net;
use crate::postgres::{unique_name, with_connection};

/// The address the cluster listens on (and its server certificate names, with `localhost`).
pub const HOST: &str = "127.0.0.1";
/// The superuser, reachable only over the private Unix socket.
pub const ADMIN: &str = "postgres";
/// How long `pg_ctl` may wait for a start or a stop.
const PG_CTL_WAIT_SECS: &str = "60";
/// How long [`TlsCluster::reload`] waits for the server to have re-read its files.
const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

/// A client identity's files, as a libpq URL names them.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    /// The CA the server certificate chains to (`sslrootcert`).
    pub root_cert: PathBuf,
    /// The client certificate, CN = the role (`sslcert`).
    pub cert: PathBuf,
    /// Its private key, PKCS#8, mode 0600 (`sslkey`).
    pub key: PathBuf,
}

impl ClientFiles {
    /// `sslmode=verify-full&sslrootcert=…&sslcert=…&sslkey=…`.
    pub fn query(&self) -> String {
        format!(
            "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            self.root_cert.display(),
            self.cert.display(),
            self.key.display()
        )
    }

    /// Copies the three files to `dir` as `ca.crt`, `tls.crt` and `tls.key` (a mounted
    /// cert-manager Secret's names), each replaced atomically; returns the copies.
    pub fn install(&self, dir: &Path) -> ClientFiles {
        let installed = ClientFiles {
            root_cert: dir.join("ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        for (from, to, mode) in [
            (&self.root_cert, &installed.root_cert, 0o644),
            (&self.cert, &installed.cert, 0o644),
            (&self.key, &installed.key, 0o600),
        ] {
            let staged = to.with_extension("new");
            std::fs::copy(from, &staged)
                .unwrap_or_else(|e| panic!("copy {} → {}: {e}", from.display(), to.display()));
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", staged.display()));
            std::fs::rename(&staged, to)
                .unwrap_or_else(|e| panic!("rename to {}: {e}", to.display()));
        }
        installed
    }
}

/// A database on the cluster and the plain login role keysvc runs as (no superuser,
/// CREATEROLE, CREATEDB nor BYPASSRLS); both go with the cluster.
#[derive(Debug, Clone)]
pub struct ClusterDatabase {
    pub name: String,
    pub role: String,
}

/// The running (or stopped) cluster; see the module documentation.
#[derive(Debug)]
pub struct TlsCluster {
    root: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    port: u16,
    /// `Some` when commands run as `postgres` through `runuser` (the test runs as root).
    owner: Option<(u32, u32)>,
    /// The current CA (server and client certificates) and its generation (`pki-N`).
    pki: Mutex<(TestPki, u32)>,
    /// Settings of `openkcm.conf`, included by `postgresql.conf`.
    settings: Mutex<BTreeMap<String, String>>,
    watchdog: Option<Child>,
    _temp: tempfile::TempDir,
}

impl TlsCluster {
    /// Creates and starts a cluster on a free port: initdb, a CA, the server certificate,
    /// TLS and certificate authentication only.
    pub fn new() -> Self {
        let temp = tempfile::Builder::new()
            .prefix("openkcm-pg-")
            .tempdir()
            .expect("temporary directory");
        let root = temp.path().to_path_buf();
        let owner = postgres_owner();
        let bin = bin_dir();
        let mut cluster = Self {
            data: root.join("data"),
            socket_dir: root.join("run"),
            log: root.join("postgres.log"),
            port: 0,
            owner,
            pki: Mutex::new((
                TestPki::at(&make_dir(&root.join("pki-1")), "postgres test CA 1"),
                1,
            )),
            settings: Mutex::new(BTreeMap::new()),
            watchdog: None,
            bin,
            root,
            _temp: temp,
        };
        cluster.chown(&cluster.root);
        make_dir(&cluster.socket_dir);
        cluster.chown(&cluster.socket_dir);
        cluster.watchdog = Some(cluster.spawn_watchdog());
        cluster.initdb();
        cluster.write_server_files();
        cluster.write_hba(&default_hba());
        cluster.port = net::retry_addr_in_use("PostgreSQL", || {
            let port = net::free_addr().port();
            cluster.write_conf(port);
            cluster.pg_ctl_start().map(|()| port)
        });
        cluster
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (for a test that wants to look, or to break something).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The current CA's certificate file: `sslrootcert` for the clients.
    pub fn ca_file(&self) -> PathBuf {
        self.pki.lock().expect("pki").0.path(CA_FILE)
    }

    /// Issues a client certificate for `role` (CN = `role`) from the current CA and returns
    /// its files (re-issued, same paths, on every call).
    pub fn client(&self, role: &str) -> ClientFiles {
        let pki = self.pki.lock().expect("pki");
        pki.0.issue(role, &certs::client(role, &[]));
        ClientFiles {
            root_cert: pki.0.path(CA_FILE),
            cert: pki.0.path(&format!("{role}.pem")),
            key: pki.0.path(&format!("{role}-key.pem")),
        }
    }

    /// `postgres://ROLE@127.0.0.1:PORT/DATABASE?QUERY`, for URLs a test composes itself.
    pub fn url_with(&self, role: &str, database: &str, query: &str) -> String {
        let url = format!("postgres://{role}@{HOST}:{}/{database}", self.port);
        if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        }
    }

    /// The URL of `role` on `database` over TLS with `files` (verify-full).
    pub fn url(&self, role: &str, database: &str, files: &ClientFiles) -> String {
        self.url_with(role, database, &files.query())
    }

    /// The superuser's URL for `database` over the private socket (no TLS there), e.g. for
    /// `keysvc migrate`.
    pub fn admin_url(&self, database: &str) -> String {
        format!(
            "postgres://{ADMIN}@localhost:{}/{database}?host={}",
            self.port,
            self.socket_dir.display()
        )
    }

    /// A superuser connection to the `postgres` database.
    pub async fn admin(&self) -> sqlx::PgConnection {
        let url = self.admin_url("postgres");
        sqlx::PgConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("admin connection to the test cluster: {e}"))
    }

    /// Runs `sql` as the superuser on `database` (any runtime or none: a thread of its
    /// own); returns every row's one column, which must be text (cast it: `…::text`).
    pub fn sql(&self, database: &str, sql: &str) -> Vec<String> {
        self.try_sql(database, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", self.log_tail()))
    }

    fn try_sql(&self, database: &str, sql: &str) -> Result<Vec<String>, String> {
        let sql = sql.to_owned();
        with_connection(&self.admin_url(database), move |mut conn| async move {
            let rows: Vec<(Option<String>,)> = sqlx::query_as(&sql)
                .fetch_all(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            let _ = conn.close().await;
            Ok(rows.into_iter().map(|(v,)| v.unwrap_or_default()).collect())
        })
    }

    /// A new database and a new plain login role (`PREFIX_…`, `PREFIX_app_…`), the role's
    /// client certificate issued; migrate it with [`TlsCluster::owner_url`].
    pub fn create_database(&self, prefix: &str) -> ClusterDatabase {
        let db = ClusterDatabase {
            name: unique_name(prefix),
            role: unique_name(&format!("{prefix}_app")),
        };
        self.ddl(&format!(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS",
            db.role
        ));
        self.ddl(&format!("CREATE DATABASE {}", db.name));
        self.client(&db.role);
        db
    }

    /// The table owner's (superuser's) URL of `db`, over the socket.
    pub fn owner_url(&self, db: &ClusterDatabase) -> String {
        self.admin_url(&db.name)
    }

    /// keysvc's URL for `db`: its role, verify-full, the role's client certificate as
    /// issued by [`TlsCluster::create_database`] (or the last [`TlsCluster::client`]).
    pub fn keysvc_url(&self, db: &ClusterDatabase) -> String {
        let pki = self.pki.lock().expect("pki");
        let files = ClientFiles {
            root_cert: pki.0.path(CA_FILE),
            cert: pki.0.path(&format!("{}.pem", db.role)),
            key: pki.0.path(&format!("{}-key.pem", db.role)),
        };
        drop(pki);
        self.url(&db.role, &db.name, &files)
    }

    /// Runs one statement that returns no rows (DDL, …) as the superuser on `database`.
    pub fn execute(&self, database: &str, statement: &str) {
        let statement = statement.to_owned();
        with_connection(&self.admin_url(database), move |mut conn| async move {
            sqlx::Executor::execute(&mut conn, statement.as_str())
                .await
                .map_err(|e| format!("{statement}: {e}"))?;
            let _ = conn.close().await;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()));
    }

    /// [`TlsCluster::execute`] on the `postgres` database.
    pub fn ddl(&self, statement: &str) {
        self.execute("postgres", statement);
    }

    /// Ends every session of `role` (pg_terminate_backend); returns how many there were.
    pub fn terminate_sessions(&self, role: &str) -> usize {
        self.sql(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity \
                 WHERE usename = '{}'",
                role.replace('\'', "''")
            ),
        )
        .len()
    }

    // ------------------------------------------------------------------ certificates

    /// Replaces the CA by a new one: a new server certificate from it, and it alone trusted
    /// for client certificates; reloads. Client certificates issued before no longer log in;
    /// [`TlsCluster::client`] issues from the new CA.
    pub fn rotate_ca(&self) {
        {
            let mut pki = self.pki.lock().expect("pki");
            let generation = pki.1 + 1;
            let dir = make_dir(&self.root.join(format!("pki-{generation}")));
            *pki = (
                TestPki::at(&dir, &format!("postgres test CA {generation}")),
                generation,
            );
        }
        self.write_server_files();
        self.reload();
    }

    /// Serves `cert_pem` / `key_pem` as the server certificate from now on (reloads).
    pub fn serve_certificate(&self, cert_pem: &str, key_pem: &str) {
        self.write_owned(&self.data.join("server.crt"), cert_pem, 0o644);
        self.write_owned(&self.data.join("server.key"), key_pem, 0o600);
        self.reload();
    }

    /// A server certificate from the current CA for `dns_names` only (not 127.0.0.1): a
    /// client connecting to 127.0.0.1 with verify-full must refuse it.
    pub fn serve_certificate_for(&self, dns_names: &[&str]) {
        let issued = {
            let pki = self.pki.lock().expect("pki");
            let spec = CertSpec {
                dns_names: dns_names.iter().map(|n| n.to_string()).collect(),
                server: true,
                ..CertSpec::new("postgres")
            };
            pki.0.ca.issue(&spec).expect("server certificate")
        };
        self.serve_certificate(&issued.cert_pem, issued.key_pem.expose());
    }

    /// Listens on `address` too (an address of this host, e.g. of a veth pair leading into a
    /// network namespace), admits `clients` (a CIDR) over TLS with client certificates, and
    /// serves a certificate that names `address` as well as localhost and 127.0.0.1; restarts
    /// the server (`-m fast`) to listen there.
    pub fn also_listen_on(&self, address: std::net::IpAddr, clients: &str) {
        self.set("listen_addresses", &format!("'{HOST},{address}'"));
        self.write_hba(&format!(
            "{}hostssl all all {clients} cert\n",
            default_hba()
        ));
        let issued = {
            let pki = self.pki.lock().expect("pki");
            let mut spec = certs::localhost_server("postgres");
            spec.ip_addresses.push(address);
            pki.0.ca.issue(&spec).expect("server certificate")
        };
        self.write_owned(&self.data.join("server.crt"), &issued.cert_pem, 0o644);
        self.write_owned(
            &self.data.join("server.key"),
            issued.key_pem.expose(),
            0o600,
        );
        self.restart_fast();
    }

    /// Lets a certificate with CN `cn` log in as `role` too (a `pg_ident.conf` map; e.g. the
    /// superuser's certificate for `openkcm dev`'s derived role); reloads.
    pub fn allow_certificate_as(&self, cn: &str, role: &str) {
        let ident = self.data.join("pg_ident.conf");
        let mut text = std::fs::read_to_string(&ident).unwrap_or_default();
        if !text.contains("openkcm /^(.*)$") {
            // Every CN still logs in as itself.
            text.push_str("openkcm /^(.*)$ \\1\n");
        }
        text.push_str(&format!("openkcm {cn} {role}\n"));
        self.write_owned(&ident, &text, 0o600);
        self.write_hba(&default_hba().replace(" cert\n", " cert map=openkcm\n"));
        self.reload();
    }

    // ------------------------------------------------------------------ configuration

    /// Sets `name = value` in the cluster's own settings file (quote strings yourself:
    /// `set("ssl", "off")`, `set("log_min_messages", "'debug1'")`). Takes effect at the
    /// next [`TlsCluster::reload`] or restart.
    pub fn set(&self, name: &str, value: &str) {
        let text = {
            let mut settings = self.settings.lock().expect("settings");
            settings.insert(name.to_owned(), value.to_owned());
            settings
                .iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect::<String>()
        };
        self.write_owned(&self.data.join("openkcm.conf"), &text, 0o600);
    }

    /// Replaces `pg_hba.conf` (takes effect at the next reload).
    pub fn write_hba(&self, text: &str) {
        self.write_owned(&self.data.join("pg_hba.conf"), text, 0o600);
    }

    // ------------------------------------------------------------------ lifecycle

    /// Starts the stopped server on the same port with the same data (`pg_ctl start -w`).
    pub fn start(&self) {
        self.pg_ctl_start()
            .unwrap_or_else(|e| panic!("pg_ctl start: {e}"));
    }

    /// Stops the server, sessions ended cleanly (`pg_ctl stop -m fast -w`).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast"])
            .unwrap_or_else(|e| panic!("pg_ctl stop: {e}"));
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint, crash
    /// recovery at the next start; committed transactions survive).
    pub fn stop_immediate(&self) {
        self.pg_ctl(&["stop", "-m", "immediate"])
            .unwrap_or_else(|e| panic!("pg_ctl stop -m immediate: {e}"));
    }

    /// `pg_ctl restart -m fast -w`: every session ended, the server back on the same port.
    pub fn restart_fast(&self) {
        let log = self.log.display().to_string();
        self.pg_ctl(&["restart", "-m", "fast", "-l", &log])
            .unwrap_or_else(|e| panic!("pg_ctl restart: {e}"));
    }

    /// Whether the server is running (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        self.pg_ctl(&["status"]).is_ok()
    }

    /// Makes the server re-read its configuration, `pg_hba.conf`, `pg_ident.conf` and TLS
    /// files, and returns once new sessions see them (their `pg_conf_load_time()` moved);
    /// panics if the server logged that it refused the new files.
    pub fn reload(&self) {
        let load_time = || self.sql("postgres", "SELECT pg_conf_load_time()::text");
        let before = load_time();
        let log_before = self.log().len();
        self.pg_ctl(&["reload"])
            .unwrap_or_else(|e| panic!("pg_ctl reload: {e}"));
        let started = Instant::now();
        while load_time() == before {
            assert!(
                started.elapsed() < RELOAD_DEADLINE,
                "the server did not reload within {RELOAD_DEADLINE:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let log = self.log();
        let new = log.get(log_before..).unwrap_or_default();
        for refusal in ["was not reloaded", "contains errors", "could not load"] {
            assert!(
                !new.contains(refusal),
                "the server refused the reloaded files:\n{new}"
            );
        }
    }

    // ------------------------------------------------------------------ internals

    fn initdb(&self) {
        let data = self.data.display().to_string();
        let output = self
            .command("initdb")
            .args(["-D", &data, "-U", ADMIN, "--auth=trust", "--no-sync"])
            .args(["-E", "UTF8", "--locale=C"])
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The current CA's server certificate (localhost, 127.0.0.1) and the CA trusted for
    /// client certificates, into the data directory, owned by the server's user.
    fn write_server_files(&self) {
        let (issued, ca) = {
            let pki = self.pki.lock().expect("pki");
            let issued = pki
                .0
                .ca
                .issue(&certs::localhost_server("postgres"))
                .expect("server certificate");
            (issued, pki.0.ca.cert_pem().to_owned())
        };
        self.write_owned(&self.data.join("server.crt"), &issued.cert_pem, 0o644);
        self.write_owned(
            &self.data.join("server.key"),
            issued.key_pem.expose(),
            0o600,
        );
        self.write_owned(&self.data.join("client-ca.pem"), &ca, 0o644);
    }

    fn write_conf(&self, port: u16) {
        let conf = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        if let Some(at) = text.find(OURS) {
            text.truncate(at);
        }
        text.push_str(OURS);
        text.push_str(&format!(
            "listen_addresses = '{HOST}'\n\
             port = {port}\n\
             unix_socket_directories = '{}'\n\
             ssl = on\n\
             ssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\n\
             ssl_ca_file = 'client-ca.pem'\n\
             # A test cluster: the OS does not crash under it, so fsync buys nothing.\n\
             fsync = off\n\
             full_page_writes = off\n\
             shared_buffers = 16MB\n\
             max_connections = 200\n\
             log_connections = on\n\
             log_line_prefix = '%m [%p] %u@%d '\n\
             include_if_exists = 'openkcm.conf'\n",
            self.socket_dir.display()
        ));
        self.write_owned(&conf, &text, 0o600);
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let log = self.log.display().to_string();
        self.pg_ctl(&["start", "-l", &log])
    }

    /// `pg_ctl ACTION -D DATA -w -t 60 ARGS…`; the error carries pg_ctl's output and the
    /// log's tail.
    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let data = self.data.display().to_string();
        let output = self
            .command("pg_ctl")
            .arg(args[0])
            .args(["-D", &data, "-w", "-t", PG_CTL_WAIT_SECS])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run pg_ctl: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.log_tail()
            ))
        }
    }

    /// A PostgreSQL binary, as the `postgres` user when the test runs as root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match self.owner {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", ADMIN, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        command.current_dir(&self.root);
        command
    }

    /// Stops the server and removes the directory if this process dies without dropping
    /// the cluster: it waits for the end of a pipe only this process holds.
    fn spawn_watchdog(&self) -> Child {
        let as_owner = if self.owner.is_some() {
            format!("runuser -u {ADMIN} -- ")
        } else {
            String::new()
        };
        let script = format!(
            "read _ignored; {as_owner}'{}' stop -D '{}' -m immediate >/dev/null 2>&1; \
             rm -rf '{}'",
            self.bin.join("pg_ctl").display(),
            self.data.display(),
            self.root.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            // Its stdin stays open, in the Child, for as long as the cluster lives.
            .expect("spawn the cluster's watchdog")
    }

    /// Writes `text` to `path` as the server's user (atomically: a rename), with `mode`.
    fn write_owned(&self, path: &Path, text: &str, mode: u32) {
        let staged = path.with_extension("staged");
        std::fs::write(&staged, text).unwrap_or_else(|e| panic!("{}: {e}", staged.display()));
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", staged.display()));
        self.chown(&staged);
        std::fs::rename(&staged, path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    fn chown(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }

    /// The last lines of the server's log, for failure messages.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("--- {} (tail) ---\n{tail}", self.log.display())
    }
}

impl Default for TlsCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if self.is_running() {
            let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
        }
        // The temporary directory removes itself.
    }
}

/// Marks where this module's settings start in `postgresql.conf`.
const OURS: &str = "\n# --- testkit::pg_cluster ---\n";

/// The superuser over the private socket only; everyone else over TLS with a client
/// certificate whose CN is the role; no plain `host` line.
fn default_hba() -> String {
    format!(
        "local all {ADMIN} trust\n\
         hostssl all all {HOST}/32 cert\n"
    )
}

/// The `postgres` user's uid and gid when this process runs as root (PostgreSQL refuses
/// root), `None` otherwise (everything runs as the test's own user).
fn postgres_owner() -> Option<(u32, u32)> {
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok()?;
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let entry = passwd
        .lines()
        .find(|line| line.starts_with(&format!("{ADMIN}:")))
        .expect("a postgres user (the tests run PostgreSQL as it)");
    let fields: Vec<&str> = entry.split(':').collect();
    let id = |i: usize| fields.get(i).and_then(|f| f.parse().ok()).expect("uid/gid");
    Some((id(2), id(3)))
}

/// Where `initdb`, `pg_ctl` and `postgres` are.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OPENKCM_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("initdb"))
            .find(|initdb| initdb.is_file())
            .and_then(|initdb| std::fs::canonicalize(initdb).ok())
            .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
    });
    if let Some(dir) = on_path {
        return dir;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(|d| d.ok().map(|d| d.path().join("bin")))
                .filter(|bin| bin.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .expect("PostgreSQL server binaries (initdb, pg_ctl): set OPENKCM_TEST_PG_BIN")
}

fn make_dir(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir.to_path_buf()
}
