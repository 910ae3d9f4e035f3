//! Transaction ids in SQL. A row's `xmin` holds 32 bits; PostgreSQL counts in 64 (an epoch above
//! them). Widening one needs a 64-bit id near it: `txid_snapshot_xmax` is the one at hand, and it
//! is the latest *completed* id plus one — the reading transaction's own ids (and those of other
//! transactions still open) can lie above it. So [`widen`] takes the 64-bit id nearest to it,
//! within 2^31 either way, not "above it means the previous epoch".
//!
//! Nearest is right for every id a *live* row can carry (an unfrozen `xmin` is within 2^31 of the
//! next id: wraparound protection sees to that). A frozen row keeps its original `xmin` (since
//! PostgreSQL 9.4 freezing sets a flag), and on a server past 2^31 ids an old one can widen to
//! anything, above the snapshot's `xmax` too: callers compare rows whose values changed, and a
//! frozen row never has. [`written_by_this_transaction`] never asks the server about an id at or
//! above `xmax` (`txid_status` raises "transaction ID … is in the future" for one it has not
//! handed out yet).

/// SQL: the 64-bit transaction id whose low 32 bits are `xid32` (an `xid` expression such as
/// `c.xmin`), nearest to the 64-bit id `near` (a `bigint` expression, evaluated once).
pub fn widen(xid32: &str, near: &str) -> String {
    format!(
        "(SELECT CASE WHEN c - n > 2147483648 THEN c - 4294967296 WHEN n - c > 2147483648 THEN c + 4294967296 ELSE c END \
         FROM (SELECT (((n >> 32) << 32) | {xid32}::text::bigint) AS c, n FROM (SELECT ({near})::bigint AS n) n0) q)"
    )
}

/// SQL: whether a row the reading session sees, whose `xmin` is `xid32`, was written by the
/// reading transaction or one of its subtransactions, `near` being the snapshot's `xmax`. A
/// visible row at or above `xmax` is one of ours (another transaction's row there is
/// invisible) — or a frozen row that widened there, which is unchanged; below it, a visible
/// row whose writer is still in progress is ours. Frozen and bootstrap ids (below 3) are
/// nobody's.
pub fn written_by_this_transaction(xid32: &str, near: &str) -> String {
    format!(
        "coalesce((SELECT CASE WHEN v >= n THEN true ELSE txid_status(v) = 'in progress' END \
         FROM (SELECT {} AS v, ({near})::bigint AS n) w WHERE v >= 0 AND {xid32}::text::bigint >= 3), false)",
        widen(xid32, near)
    )
}

/// The 64-bit id to widen against, read from the current snapshot.
pub const SNAPSHOT_XMAX: &str = "txid_snapshot_xmax(txid_current_snapshot())";
