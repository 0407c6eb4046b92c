//! Throwaway PostgreSQL databases on the local server (127.0.0.1:5432, trust authentication;
//! `OPENKCM_TEST_POSTGRES` names another admin URL): created with unique names, dropped with
//! their guard.

use sqlx::Connection;

/// The admin URL the databases are created with.
pub fn admin_url() -> String {
    std::env::var("OPENKCM_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A connection as the admin; fails the test when PostgreSQL is not there.
pub async fn admin() -> sqlx::PgConnection {
    let url = admin_url();
    sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("these tests need PostgreSQL at {url}: {e}"))
}

/// Runs one admin statement, failing the test if it fails.
pub async fn admin_execute(statement: &str) {
    sqlx::query(statement)
        .execute(&mut admin().await)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// A name no other test of this run, nor a concurrent run, uses: `prefix_PID_N_NANOS`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// A fresh, empty database and a fresh login role (for the application to run as). Both
/// are dropped when this guard is, the database's sessions terminated.
#[derive(Debug)]
pub struct PgDatabase {
    pub name: String,
    pub role: String,
}

impl PgDatabase {
    /// Database `PREFIX_…` and role `PREFIX_app_…`.
    pub async fn create(prefix: &str) -> Self {
        let db = Self {
            name: unique_name(prefix),
            role: unique_name(&format!("{prefix}_app")),
        };
        admin_execute(&format!("CREATE ROLE {} LOGIN", db.role)).await;
        admin_execute(&format!("CREATE DATABASE {}", db.name)).await;
        db
    }

    /// This database's URL as `user`, on the admin URL's server.
    pub fn url_for(&self, user: &str) -> String {
        let admin = admin_url();
        let host = admin
            .split_once('@')
            .and_then(|(_, rest)| rest.split('/').next())
            .unwrap_or("127.0.0.1:5432");
        format!("postgres://{user}@{host}/{}", self.name)
    }

    /// The admin's URL for this database (migrations).
    pub fn owner_url(&self) -> String {
        let admin = admin_url();
        let user = admin
            .trim_start_matches("postgres://")
            .split('@')
            .next()
            .unwrap_or("postgres")
            .to_owned();
        self.url_for(&user)
    }

    /// The login role's URL.
    pub fn app_url(&self) -> String {
        self.url_for(&self.role)
    }

    /// Drops the database now, terminating its sessions (the role stays).
    pub async fn vanish(&self) {
        admin_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name)).await;
    }

    /// Creates the database again, empty, after [`PgDatabase::vanish`].
    pub async fn recreate_empty(&self) {
        admin_execute(&format!("CREATE DATABASE {}", self.name)).await;
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let statements = [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            format!("DROP ROLE IF EXISTS {}", self.role),
        ];
        // A Drop may run inside a runtime, or while a test unwinds: best effort.
        let _ = with_connection(&admin_url(), move |mut admin| async move {
            for statement in &statements {
                let _ = sqlx::query(statement).execute(&mut admin).await;
            }
            Ok(())
        });
    }
}

/// Connects to `url` and runs `work` with the connection, on a thread and a runtime of its
/// own: callable from sync code, from inside a runtime and from a `Drop`. Errors (connect,
/// runtime, `work`'s own, a panic) come back as text.
pub fn with_connection<T, F, Fut>(url: &str, work: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(sqlx::PgConnection) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let url = url.to_owned();
    let run = move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let conn = sqlx::PgConnection::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            work(conn).await
        })
    };
    std::thread::spawn(run)
        .join()
        .unwrap_or_else(|_| Err("the SQL thread panicked".into()))
}
