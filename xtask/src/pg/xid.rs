//! Transaction ids in SQL. A row's `xmin` holds 32 bits; PostgreSQL counts in 64 (an epoch above
//! them). Widening one needs a 64-bit id to be near: `txid_snapshot_xmax` is the usual one, and
//! it is the latest *completed* id plus one — the reading transaction's own ids, and those of
//! other transactions still open, can lie above it. So the widening takes the 64-bit id nearest
//! to it, within 2^31 either way (no id a row can hold is further than that from the next one:
//! wraparound protection freezes rows long before), not "above it means the previous epoch".

/// SQL: the 64-bit transaction id whose low 32 bits are `xid32` (an `xid` expression such as
/// `c.xmin`), nearest to the 64-bit id `near` (a `bigint` expression, evaluated once).
pub fn widen(xid32: &str, near: &str) -> String {
    format!(
        "(SELECT CASE WHEN c - n > 2147483648 THEN c - 4294967296 WHEN n - c > 2147483648 THEN c + 4294967296 ELSE c END \
         FROM (SELECT (((n >> 32) << 32) | {xid32}::text::bigint) AS c, n FROM (SELECT ({near})::bigint AS n) n0) q)"
    )
}

/// SQL: whether a row the reading session sees, whose `xmin` is `xid32`, was written by the
/// reading transaction or one of its subtransactions. A visible row whose writer is still in
/// progress is one of ours: another transaction's uncommitted rows are invisible. Frozen and
/// bootstrap ids (below 3) are nobody's.
pub fn written_by_this_transaction(xid32: &str, near: &str) -> String {
    format!(
        "coalesce((SELECT txid_status(v) = 'in progress' FROM (SELECT {} AS v) w WHERE v >= 0 AND {xid32}::text::bigint >= 3), false)",
        widen(xid32, near)
    )
}

/// The 64-bit id to widen against, read from the current snapshot.
pub const SNAPSHOT_XMAX: &str = "txid_snapshot_xmax(txid_current_snapshot())";
