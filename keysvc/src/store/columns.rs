//! How an [`ObjectRecord`](super::ObjectRecord) maps to SQL columns, shared by both stores.

use crate::envelope::WrappedKey;

use super::{LocateFilter, StoreError};

/// Capacity of the in-process change channel. A subscriber that falls further behind gets
/// `RecvError::Lagged` and must treat its whole cache as stale; 1024 changes is far more
/// than a cache invalidator lags by in practice.
pub(super) const CHANGES_CAPACITY: usize = 1024;

/// Rows per multi-row `INSERT` of index pairs: SQLite allows 32,766 bound parameters per
/// statement and each row binds five; records carry a handful of pairs.
pub(super) const INDEX_ROWS_PER_INSERT: usize = 1000;

/// KMIP enumerations are unsigned 32-bit; both databases store them as 64-bit integers.
pub(super) fn enum_to_sql(value: u32) -> i64 {
    i64::from(value)
}

pub(super) fn enum_from_sql(column: &str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| {
        StoreError::Database(format!(
            "column {column} holds {value}, not a KMIP enumeration"
        ))
    })
}

pub(super) fn optional_enum_from_sql(
    column: &str,
    value: Option<i64>,
) -> Result<Option<u32>, StoreError> {
    value.map(|v| enum_from_sql(column, v)).transpose()
}

/// `(root_key_id, material)` columns of a record; both `NULL` once the object is destroyed.
pub(super) fn material_to_sql(material: Option<&WrappedKey>) -> (Option<&str>, Option<&[u8]>) {
    match material {
        Some(wrapped) => (
            Some(wrapped.root_key_id.as_str()),
            Some(wrapped.blob.as_slice()),
        ),
        None => (None, None),
    }
}

pub(super) fn material_from_sql(
    uid: &str,
    root_key_id: Option<String>,
    blob: Option<Vec<u8>>,
) -> Result<Option<WrappedKey>, StoreError> {
    match (root_key_id, blob) {
        (Some(root_key_id), Some(blob)) => Ok(Some(WrappedKey { root_key_id, blob })),
        (None, None) => Ok(None),
        // The schema's CHECK forbids this; reaching it means the row was edited by hand.
        _ => Err(StoreError::Database(format!(
            "object {uid}: material and root key id must be both present or both absent"
        ))),
    }
}

/// `(limit, offset)` of a Locate page, `None` for no limit.
/// The indexed columns a Locate filter constrains, with the value each must equal
/// (`None`: not constrained). Both stores build their WHERE clause from this list.
pub(super) fn filter_columns(filter: &LocateFilter) -> [(&'static str, Option<i64>); 4] {
    [
        ("object_type", filter.object_type.map(enum_to_sql)),
        ("state", filter.state.map(enum_to_sql)),
        (
            "cryptographic_algorithm",
            filter.cryptographic_algorithm.map(enum_to_sql),
        ),
        (
            "cryptographic_length",
            filter.cryptographic_length.map(i64::from),
        ),
    ]
}

/// The recorded root-key checks, as both stores select them.
pub(super) const SELECT_ROOT_KEYS: &str =
    "SELECT root_key_id, check_value, legacy_rows FROM root_keys";

/// One row of [`SELECT_ROOT_KEYS`].
pub(super) type RootKeyRow = (String, Vec<u8>, bool);

pub(super) fn root_key_checks(rows: Vec<RootKeyRow>) -> Vec<super::RootKeyCheck> {
    rows.into_iter()
        .map(
            |(root_key_id, check_value, legacy_rows)| super::RootKeyCheck {
                root_key_id,
                check_value,
                legacy_rows,
            },
        )
        .collect()
}

/// `SELECT … FROM objects WHERE` the tenant's objects matching `filter`: the one WHERE
/// clause of Locate and its count, for either database.
pub(super) fn locate_query<DB>(
    select: &str,
    tenant: &str,
    filter: &LocateFilter,
) -> sqlx::QueryBuilder<'static, DB>
where
    DB: sqlx::Database,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut query =
        sqlx::QueryBuilder::<DB>::new(format!("{select} FROM objects WHERE tenant_id = "));
    query.push_bind(tenant.to_owned());
    for (column, value) in filter_columns(filter) {
        if let Some(value) = value {
            query
                .push(format_args!(" AND {column} = "))
                .push_bind(value);
        }
    }
    query.push(destroyed_clause(filter));
    for (name, value) in &filter.index {
        query
            .push(" AND uid IN (SELECT uid FROM object_index WHERE tenant_id = ")
            .push_bind(tenant.to_owned())
            .push(" AND name = ")
            .push_bind(name.clone())
            .push(" AND value = ")
            .push_bind(value.clone())
            .push(")");
    }
    query
}

/// The extra WHERE condition of [`LocateFilter::destroyed`] (constants only, no input):
/// State Destroyed (5) and Destroyed Compromised (6).
pub(super) fn destroyed_clause(filter: &LocateFilter) -> &'static str {
    match filter.destroyed {
        None => "",
        Some(true) => " AND state IN (5, 6)",
        Some(false) => " AND state NOT IN (5, 6)",
    }
}

/// The ORDER BY of a Locate.
pub(super) fn order_clause(filter: &LocateFilter) -> &'static str {
    if filter.newest_first {
        " ORDER BY seq DESC"
    } else {
        " ORDER BY seq"
    }
}

pub(super) fn page(filter: &LocateFilter) -> (Option<i64>, i64) {
    let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    let offset = i64::try_from(filter.offset).unwrap_or(i64::MAX);
    (limit, offset)
}

/// Index positions are stored as 32-bit integers; a record never has 2^31 pairs.
pub(super) fn position(index: usize) -> Result<i32, StoreError> {
    i32::try_from(index)
        .map_err(|_| StoreError::Database(format!("index pair {index} out of range")))
}

/// Maps a driver error: lost connections and pool exhaustion are `Unavailable` (worth a
/// retry), everything else is a database error.
pub(super) fn db_error(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => StoreError::Unavailable(error.to_string()),
        other => StoreError::Database(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use kmip::spec::State;

    #[test]
    fn the_destroyed_states_are_the_kmip_ones() {
        assert_eq!(State::Destroyed.value(), 5);
        assert_eq!(State::DestroyedCompromised.value(), 6);
    }
}
