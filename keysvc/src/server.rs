//! Wiring: the store, the engine and both listeners, built from a [`ServeConfig`].
//!
//! ```text
//! ServeConfig ─► open_store ─► ObservedStore ─► Engine (+ cache) ─► Metrics
//!                              (database_up: every store call, and a probe every 10 s)
//!            ┌──────────────────────┴──────────────────────┐
//!   api listener (mTLS, api_router)          management listener (plain, management_router)
//!   ApiTls: certificate, key and client CA
//!   re-read when their files change (2 s)
//!            └─ SIGTERM: /ready 503 for the drain period (everything still served),
//!               then one CancellationToken: stop accepting (GOAWAY), watching, probing;
//!               in-flight requests finish (at most the grace period); exit ─┘
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseConfig, ServeConfig, ShutdownTimes};
use crate::engine::{Engine, EngineConfig};
use crate::envelope::{Keyring, RootKey};
use crate::health::{DatabaseHealth, ObservedStore};
use crate::http::{self, ApiTls, AppState, GatewayAllowList, TlsError, Transport};
use crate::metrics::Metrics;
use crate::store::postgres::{PostgresOptions, PostgresStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{RootKeyCheck, Store, StoreError};
use runtime::fairness::TenantSlots;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    RootKey(#[from] RootKeyError),
}

/// The loaded root keys do not match the database (see [`verify_root_keys`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootKeyError {
    #[error(
        "root key {0} does not match the key recorded under that id in the database \
         (wrong key bytes for this id): refusing to start"
    )]
    Mismatch(String),
    #[error(
        "none of the loaded root keys ({loaded}) was ever used with this database, which \
         was sealed under {recorded}: refusing to start (configure the key the data was \
         sealed with, as root_key or root_key.previous)"
    )]
    Unknown { loaded: String, recorded: String },
    #[error("root key check: {0}")]
    Store(#[from] StoreError),
}

/// Checks the keyring against the root key check values recorded in the database, and
/// records the current key's when it is new:
///
/// - a loaded key whose id is recorded must reproduce the recorded check value
///   ([`RootKeyError::Mismatch`]: same id, other bytes);
/// - if any key is recorded, at least one loaded key must be ([`RootKeyError::Unknown`]:
///   a keyring that was never used with this database);
/// - the current key's check value is recorded if absent (a new key becoming current, as
///   in a rotation), then re-read and compared (another replica may record concurrently).
///
/// Keys whose record allows rows predating authenticated records are marked so in the
/// keyring. Run at every start (serve and rotate-root), before anything is read or written.
pub async fn verify_root_keys(store: &dyn Store, keyring: &Keyring) -> Result<(), RootKeyError> {
    let recorded = store.root_key_checks().await?;
    let verify = |recorded: &[RootKeyCheck]| -> Result<usize, RootKeyError> {
        let mut known = 0;
        for key in keyring.keys() {
            let Some(record) = recorded.iter().find(|r| r.root_key_id == key.id()) else {
                continue;
            };
            let expected = key.check_value(record.legacy_rows);
            if !constant_time_eq(&expected, &record.check_value) {
                return Err(RootKeyError::Mismatch(key.id().to_owned()));
            }
            if record.legacy_rows {
                keyring.permit_legacy_rows(key.id());
            }
            known += 1;
        }
        Ok(known)
    };
    let known = verify(&recorded)?;
    if !recorded.is_empty() && known == 0 {
        let ids = |it: &mut dyn Iterator<Item = &str>| it.collect::<Vec<_>>().join(", ");
        return Err(RootKeyError::Unknown {
            loaded: ids(&mut keyring.keys().map(RootKey::id)),
            recorded: ids(&mut recorded.iter().map(|r| r.root_key_id.as_str())),
        });
    }
    // First start on this database (or since root key records exist): every loaded key is
    // recorded, allowing rows that predate authenticated records if the migration found
    // some. Later, only a new current key is recorded, and never allows them.
    let first = recorded.is_empty();
    let legacy_rows = first && store.predates_integrity().await?;
    let current = keyring.current();
    let mut new_keys = Vec::new();
    for key in keyring.keys() {
        let is_new = !recorded.iter().any(|r| r.root_key_id == key.id());
        if is_new && (first || key.id() == current.id()) {
            new_keys.push(key);
        }
    }
    for key in &new_keys {
        store
            .record_root_key_check(&RootKeyCheck {
                root_key_id: key.id().to_owned(),
                check_value: key.check_value(legacy_rows).to_vec(),
                legacy_rows,
            })
            .await?;
        tracing::info!(
            root_key = key.id(),
            legacy_rows,
            "root key check value recorded"
        );
    }
    if !new_keys.is_empty() {
        verify(&store.root_key_checks().await?)?;
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Opens the configured store. PostgreSQL in production refuses a role that could bypass
/// Row-Level Security; `dev` connects as a superuser and runs as a derived app role.
pub async fn open_store(database: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match database {
        DatabaseConfig::Sqlite { url } => Arc::new(SqliteStore::open(url).await?),
        DatabaseConfig::Postgres {
            url,
            dev,
            max_connections,
            acquire_timeout,
        } => {
            let options = PostgresOptions {
                max_connections: *max_connections,
                acquire_timeout: *acquire_timeout,
                ..PostgresOptions::default()
            };
            let store = if *dev {
                PostgresStore::connect_dev_with(url.expose(), options).await?
            } else {
                PostgresStore::connect(url.expose(), options).await?
            };
            Arc::new(store)
        }
    })
}

/// Opens the store for `rotate-root`: as [`open_store`], and on PostgreSQL (outside dev
/// mode, whose store holds the owner's connection already) with the table owner's URL,
/// which listing tenants needs: the runtime role cannot read the tenant list.
pub async fn open_store_for_rotation(
    database: &DatabaseConfig,
    owner_url: Option<&str>,
) -> Result<Arc<dyn Store>, StoreError> {
    match (database, owner_url) {
        (
            DatabaseConfig::Postgres {
                url,
                dev: false,
                max_connections,
                acquire_timeout,
            },
            Some(owner_url),
        ) => {
            let options = PostgresOptions {
                max_connections: *max_connections,
                acquire_timeout: *acquire_timeout,
                ..PostgresOptions::default()
            };
            let store = PostgresStore::connect_with_owner(url.expose(), owner_url, options).await?;
            Ok(Arc::new(store))
        }
        _ => open_store(database).await,
    }
}

/// A running keysvc: both listeners bound and serving.
#[derive(Debug)]
pub struct KeysvcServer {
    api_addr: SocketAddr,
    management_addr: SocketAddr,
    engine: Engine,
    /// Cancelled when a graceful stop begins (`/ready` 503).
    draining: CancellationToken,
    /// Cancelled when the listeners stop accepting and drain their connections.
    shutdown: CancellationToken,
    times: ShutdownTimes,
    tasks: JoinSet<()>,
}

impl KeysvcServer {
    /// Binds both listeners and starts serving with `store` (opened by [`open_store`], or
    /// any other store in tests), watching the TLS files and probing the database until
    /// shutdown.
    pub async fn start(config: &ServeConfig, store: Arc<dyn Store>) -> Result<Self, ServerError> {
        verify_root_keys(store.as_ref(), &config.store.keyring).await?;
        let database = DatabaseHealth::new();
        let store: Arc<dyn Store> = Arc::new(ObservedStore::new(store, database.clone()));
        let engine = engine(store.clone(), config.store.keyring.clone(), config);
        let metrics = Arc::new(Metrics::new(&engine, &database));
        let tls = Arc::new(ApiTls::new(&config.tls, metrics.certificates())?);
        let acceptor = TlsAcceptor::from(tls.server_config()?);

        let api = bind(config.api_addr).await?;
        let management = bind(config.management_addr).await?;
        let api_addr = local_addr(&api, config.api_addr)?;
        let management_addr = local_addr(&management, config.management_addr)?;

        let state = AppState {
            metrics,
            engine: engine.clone(),
            gateways: Arc::new(GatewayAllowList::new(config.gateways.clone())),
            max_body_size: config.max_body_size,
            tenant_slots: Arc::new(TenantSlots::new(config.tenant_concurrency)),
            draining: CancellationToken::new(),
        };
        let draining = state.draining.clone();
        let times = config.shutdown;
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(http::serve(
            api,
            Transport::Tls(acceptor),
            http::api_router(state.clone()),
            shutdown.clone(),
            times.grace,
        ));
        tasks.spawn(http::serve(
            management,
            Transport::Plain,
            http::management_router(state),
            shutdown.clone(),
            times.grace,
        ));
        tasks.spawn(tls.watch(shutdown.clone()));
        tasks.spawn(database.probe_until(store, shutdown.clone()));
        tracing::info!(
            api = %api_addr,
            management = %management_addr,
            gateways = ?config.gateways,
            root_key = config.store.keyring.current_id(),
            "keysvc listening"
        );
        Ok(Self {
            api_addr,
            management_addr,
            engine,
            draining,
            shutdown,
            times,
            tasks,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn management_addr(&self) -> SocketAddr {
        self.management_addr
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Cancelling this token stops the listeners at once (no drain period): they stop
    /// accepting, send GOAWAY and let in-flight requests finish.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts the drain period: `/ready` answers 503 from now on; every request is still
    /// served.
    pub fn begin_drain(&self) {
        if !self.draining.is_cancelled() {
            tracing::info!(
                drain_seconds = self.times.drain.as_secs_f64(),
                "stopping: /ready answers 503 while the gateways take this replica out of rotation"
            );
            self.draining.cancel();
        }
    }

    /// Stops accepting, sends GOAWAY, waits for in-flight requests (at most the grace
    /// period), with no drain period.
    pub async fn shutdown(mut self) {
        self.draining.cancel();
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// A graceful stop: the drain period ([`Self::begin_drain`]), then [`Self::shutdown`].
    pub async fn stop_gracefully(self) {
        self.begin_drain();
        tokio::select! {
            _ = tokio::time::sleep(self.times.drain) => {}
            _ = self.shutdown.cancelled() => {}
        }
        tracing::info!(
            grace_seconds = self.times.grace.as_secs_f64(),
            "drain period over: GOAWAY, finishing in-flight requests"
        );
        self.shutdown().await;
    }

    /// Serves until `signal` completes, then stops gracefully ([`Self::stop_gracefully`]).
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        let token = self.shutdown.clone();
        tokio::select! {
            _ = signal => self.stop_gracefully().await,
            _ = token.cancelled() => self.shutdown().await,
        }
        tracing::info!("keysvc stopped");
    }
}

fn engine(store: Arc<dyn Store>, keyring: Arc<Keyring>, config: &ServeConfig) -> Engine {
    let mut engine_config = EngineConfig::default();
    // A body the HTTP layer accepted must not then be refused by the decoder for size.
    engine_config.limits.max_message_size = config.max_body_size;
    engine_config.cache = config.cache;
    engine_config.caps = config.caps;
    Engine::new(store, keyring, engine_config)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, ServerError> {
    listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })
}
