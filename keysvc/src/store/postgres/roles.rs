//! Who keysvc may connect as, and the schema it needs: migrations and grants (run as the
//! table owner), the start-up check of the runtime role, and the dev-stack role.
//!
//! ```text
//!  owner role ── migrate ──► tables, RLS policies; GRANT SELECT/INSERT/… TO app role
//!  app role   ── connect ──► refused if superuser, BYPASSRLS, CREATEROLE, a member of such a role,
//!                            or (a member of) the owner of a table; refused if a table is
//!                            missing or its row-level security is not forced
//! ```

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use crate::store::StoreError;

/// The schema, embedded in the binary: (version, description, SQL). sqlx records applied
/// versions and their checksums in `_sqlx_migrations`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "objects",
        include_str!("../../../migrations/postgres/0001_objects.sql"),
    ),
    (
        2,
        "versions",
        include_str!("../../../migrations/postgres/0002_versions.sql"),
    ),
    (
        3,
        "root keys",
        include_str!("../../../migrations/postgres/0003_root_keys.sql"),
    ),
    (
        4,
        "integrity",
        include_str!("../../../migrations/postgres/0004_integrity.sql"),
    ),
];

/// Tables keysvc needs, and those of them that hold tenant data (and so must force RLS).
pub(super) const TABLES: [&str; 5] = [
    "tenants",
    "objects",
    "object_index",
    "root_keys",
    "integrity_upgrade",
];
const TENANT_TABLES: [&str; 3] = ["tenants", "objects", "object_index"];

/// Privileges of the app role: no ownership, and DELETE only where an update replaces rows
/// (index pairs). `%1$I` is the schema, `%2$I` the role, both quoted by `format`.
const GRANTS: [&str; 7] = [
    "GRANT USAGE ON SCHEMA %1$I TO %2$I",
    "GRANT SELECT ON TABLE %1$I.integrity_upgrade TO %2$I",
    "GRANT SELECT, INSERT ON TABLE %1$I.root_keys TO %2$I",
    "GRANT SELECT, INSERT, UPDATE ON TABLE %1$I.objects TO %2$I",
    "GRANT SELECT, INSERT, DELETE ON TABLE %1$I.object_index TO %2$I",
    "GRANT SELECT, INSERT ON TABLE %1$I.tenants TO %2$I",
    "GRANT USAGE ON SEQUENCE %1$I.objects_seq_seq TO %2$I",
];

/// Advisory lock key held while migrating and granting, so two keysvc processes migrating
/// one database at once do not race on the catalog ("tuple concurrently updated").
const MIGRATE_LOCK: i64 = 0x6f70_656e_6b63_6d01;

/// Role and database creation can race with another process doing the same (parallel dev
/// stacks, tests); the loser retries this many times.
const CATALOG_RACE_RETRIES: u32 = 5;
const CATALOG_RACE_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The connect options of `url`, its TLS parameters checked first ([`super::tls`]): every
/// way in (the runtime, dev, owner and migration URLs) passes here, and sqlx keeps the
/// query's `sslmode`, `sslrootcert`, `sslcert` and `sslkey`.
pub(super) fn parse_url(url: &str) -> Result<PgConnectOptions, StoreError> {
    super::tls::check_url(url)
        .map_err(|e| StoreError::Database(format!("bad PostgreSQL URL: {e}")))?;
    url.parse()
        .map_err(|e| StoreError::Database(format!("bad PostgreSQL URL: {e}")))
}

pub(super) fn unavailable(error: sqlx::Error) -> StoreError {
    let text = error.to_string();
    StoreError::Unavailable(format!("PostgreSQL: {text}{}", tls_hint(&text)))
}

/// What a TLS failure means in terms of the URL's parameters (rustls names the cause, not
/// the setting to look at).
fn tls_hint(error: &str) -> &'static str {
    if error.contains("UnknownIssuer") {
        " (the server's certificate does not chain to sslrootcert)"
    } else if error.contains("received fatal alert") {
        " (the server refused the TLS handshake: is sslcert issued by a CA the server trusts?)"
    } else if error.contains("server does not support TLS") {
        " (the server offers no TLS, and sslmode requires it)"
    } else {
        ""
    }
}

fn migration_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Migration(error.to_string())
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(Cow::into_owned)
}

/// Another session created or altered the same catalog row at the same moment.
fn lost_catalog_race(error: &sqlx::Error) -> bool {
    let concurrently_updated = error
        .as_database_error()
        .is_some_and(|e| e.message().contains("concurrently"));
    // duplicate_object, duplicate_database, unique_violation
    matches!(
        sqlstate(error).as_deref(),
        Some("42710" | "42P04" | "23505")
    ) || concurrently_updated
}

/// Runs the migrations as `owner` and grants `app_role` what keysvc needs. The role must
/// exist (it carries the password, which is the operator's to choose) and be safe to run
/// keysvc as.
pub(super) async fn migrate_with(
    owner: &PgConnectOptions,
    app_role: &str,
) -> Result<(), StoreError> {
    if app_role.is_empty() || app_role.len() > 63 {
        return Err(StoreError::Migration(format!(
            "app role {app_role:?} must be 1-63 bytes"
        )));
    }
    let mut conn = PgConnection::connect_with(owner)
        .await
        .map_err(unavailable)?;
    let result = migrate_on(&mut conn, app_role).await;
    let _ = conn.close().await;
    result
}

async fn migrate_on(conn: &mut PgConnection, app_role: &str) -> Result<(), StoreError> {
    let role = sqlx::query(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolname = current_user AS is_owner \
         FROM pg_roles WHERE rolname = $1",
    )
    .bind(app_role)
    .fetch_optional(&mut *conn)
    .await
    .map_err(migration_error)?;
    let Some(role) = role else {
        return Err(StoreError::Migration(format!(
            "role {app_role} does not exist; create it first \
             (CREATE ROLE {app_role} LOGIN PASSWORD '…')"
        )));
    };
    let flag = |name: &str| role.try_get::<bool, _>(name).map_err(migration_error);
    if flag("rolsuper")? {
        return Err(StoreError::UnsafeRole(format!(
            "role {app_role} is superuser"
        )));
    }
    if flag("rolbypassrls")? {
        return Err(StoreError::UnsafeRole(format!(
            "role {app_role} has BYPASSRLS"
        )));
    }
    if flag("rolcreaterole")? {
        return Err(StoreError::UnsafeRole(format!(
            "role {app_role} has CREATEROLE"
        )));
    }
    if flag("is_owner")? {
        return Err(StoreError::UnsafeRole(format!(
            "role {app_role} would own the tables: migrate as another (owner) role"
        )));
    }

    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(migration_error)?;
    let result = migrate_locked(conn, app_role).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(migration_error);
    result.and(unlocked.map(drop))
}

async fn migrate_locked(conn: &mut PgConnection, app_role: &str) -> Result<(), StoreError> {
    let migrator = Migrator::new(Embedded).await.map_err(migration_error)?;
    migrator
        .run_direct(&mut *conn)
        .await
        .map_err(migration_error)?;

    let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(&mut *conn)
        .await
        .map_err(migration_error)?;
    let schema =
        schema.ok_or_else(|| StoreError::Migration("no schema on the search_path".into()))?;
    for grant in GRANTS {
        let statement: String = sqlx::query_scalar("SELECT format($1, $2::text, $3::text)")
            .bind(grant)
            .bind(&schema)
            .bind(app_role)
            .fetch_one(&mut *conn)
            .await
            .map_err(migration_error)?;
        sqlx::Executor::execute(&mut *conn, statement.as_str())
            .await
            .map_err(migration_error)?;
    }
    Ok(())
}

/// Refuses a runtime role that could read around row-level security.
pub(super) async fn check_role(conn: &mut PgConnection) -> Result<(), StoreError> {
    let failed = |e: sqlx::Error| StoreError::Database(format!("role check: {e}"));
    let (role, superuser, bypassrls, createrole): (String, bool, bool, bool) = sqlx::query_as(
        "SELECT rolname::text, rolsuper, rolbypassrls, rolcreaterole \
         FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(failed)?;
    if superuser {
        return Err(StoreError::UnsafeRole(format!("role {role} is superuser")));
    }
    if bypassrls {
        return Err(StoreError::UnsafeRole(format!("role {role} has BYPASSRLS")));
    }
    // Up to PostgreSQL 15 a CREATEROLE role can grant itself membership of any role but a
    // superuser, the table owner included (and from 16 it can create roles that can).
    if createrole {
        return Err(StoreError::UnsafeRole(format!(
            "role {role} has CREATEROLE"
        )));
    }

    // A role it belongs to can be assumed with SET ROLE.
    let powerful: Option<(String, bool, bool)> = sqlx::query_as(
        "SELECT rolname::text, rolsuper, rolbypassrls FROM pg_roles \
         WHERE (rolsuper OR rolbypassrls OR rolcreaterole) AND rolname <> current_user \
           AND pg_has_role(current_user, oid, 'MEMBER') \
         ORDER BY rolname LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(failed)?;
    if let Some((other, superuser, bypassrls)) = powerful {
        let power = if superuser {
            "is superuser"
        } else if bypassrls {
            "has BYPASSRLS"
        } else {
            "has CREATEROLE"
        };
        return Err(StoreError::UnsafeRole(format!(
            "role {role} is a member of role {other}, which {power}"
        )));
    }

    // The owner can turn row-level security off (and a member of the owner can too).
    let owned: Option<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_userbyid(c.relowner)::text \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relname = ANY($1) \
           AND pg_has_role(current_user, c.relowner, 'MEMBER') \
         ORDER BY 1 LIMIT 1",
    )
    .bind(&TABLES[..])
    .fetch_optional(&mut *conn)
    .await
    .map_err(failed)?;
    if let Some((table, owner)) = owned {
        return Err(StoreError::UnsafeRole(if owner == role {
            format!("role {role} owns table {table}")
        } else {
            format!("role {role} is a member of role {owner}, which owns table {table}")
        }));
    }
    Ok(())
}

/// Refuses a database whose schema is missing or whose tenant tables do not force RLS.
pub(super) async fn check_schema(conn: &mut PgConnection) -> Result<(), StoreError> {
    let failed = |e: sqlx::Error| StoreError::Database(format!("schema check: {e}"));
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&mut *conn)
        .await
        .map_err(failed)?;
    let tables: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname = ANY($1)",
    )
    .bind(&TABLES[..])
    .fetch_all(&mut *conn)
    .await
    .map_err(failed)?;
    for wanted in TABLES {
        let Some((_, enabled, forced)) = tables.iter().find(|(name, ..)| name == wanted) else {
            return Err(StoreError::Migration(format!(
                "database {database} has no table {wanted}: run `openkcm keysvc migrate` on it"
            )));
        };
        if TENANT_TABLES.contains(&wanted) && !(*enabled && *forced) {
            return Err(StoreError::Migration(format!(
                "database {database}: row-level security is not enabled and forced on {wanted}"
            )));
        }
    }
    Ok(())
}

/// Creates `role` (if absent) as a plain login role, and gives it `password` if one is given
/// (the dev URL's own, so the dev stack works under password authentication too).
pub(super) async fn ensure_login_role(
    conn: &mut PgConnection,
    role: &str,
    password: Option<&str>,
) -> Result<(), StoreError> {
    let failed = |e: sqlx::Error| StoreError::Database(format!("creating role {role}: {e}"));
    for attempt in 1..=CATALOG_RACE_RETRIES {
        let result = async {
            let existing: Option<(bool, bool, bool, bool)> = sqlx::query_as(
                "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcanlogin FROM pg_roles \
                 WHERE rolname = $1",
            )
            .bind(role)
            .fetch_optional(&mut *conn)
            .await?;
            let template = match existing {
                None => {
                    Some("CREATE ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE")
                }
                Some((false, false, false, true)) => None,
                Some(_) => Some("ALTER ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE"),
            };
            if let Some(template) = template {
                format_and_run(conn, template, &[role]).await?;
            }
            if let Some(password) = password {
                format_and_run(conn, "ALTER ROLE %I PASSWORD %L", &[role, password]).await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if lost_catalog_race(&e) && attempt < CATALOG_RACE_RETRIES => {
                tokio::time::sleep(CATALOG_RACE_PAUSE).await;
            }
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(())
}

/// Creates the database `name` on the owner's server if it does not exist yet.
pub(super) async fn ensure_database(
    owner: &PgConnectOptions,
    name: &str,
) -> Result<(), StoreError> {
    let mut conn = PgConnection::connect_with(owner)
        .await
        .map_err(unavailable)?;
    let result = async {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            match format_and_run(&mut conn, "CREATE DATABASE %I", &[name]).await {
                Err(e) if !lost_catalog_race(&e) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    let _ = conn.close().await;
    result.map_err(|e| StoreError::Database(format!("creating database {name}: {e}")))
}

/// Runs a statement whose identifiers and literals are quoted by PostgreSQL's `format`
/// (`%I`, `%L`), for the DDL that cannot take bind parameters.
async fn format_and_run(
    conn: &mut PgConnection,
    template: &str,
    args: &[&str],
) -> Result<(), sqlx::Error> {
    // Only the number of arguments shapes this text; the values are bound.
    let placeholders = (2..args.len() + 2)
        .map(|n| format!("${n}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    let format_sql = format!("SELECT format($1, {placeholders})");
    let mut query = sqlx::query_scalar::<_, String>(&format_sql).bind(template);
    for arg in args {
        query = query.bind(*arg);
    }
    let statement = query.fetch_one(&mut *conn).await?;
    sqlx::Executor::execute(&mut *conn, statement.as_str())
        .await
        .map(drop)
}
