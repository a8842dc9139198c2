//! The integer index key of the SQLite `workflow_id` column.
//!
//! Indexing the text column directly cost about a sixth of an append (string
//! compares on every b-tree step, long keys). The index holds a 31-bit hash of
//! the id instead: an integer of at most four bytes on disk, compared in a few
//! instructions. All events of a workflow share its key, so a batch still
//! lands on one spot of the index. Every lookup also compares the id itself
//! (`workflow_key = ? AND workflow_id = ?`), so two ids sharing a key only
//! cost an extra row read, never a wrong answer. (Entity ids are not hashed:
//! see the schema.)
//!
//! The function is part of the on-disk format (schema v2): changing it would
//! orphan every stored row from its index, so it never changes.

/// The index key of an id: FNV-1a over its UTF-8 bytes, avalanched, low 31 bits.
pub fn index_key(id: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV leaves ids differing only in their last bytes close together; the
    // MurmurHash3 finaliser spreads them over the whole range.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h & 0x7fff_ffff) as i64
}

#[cfg(test)]
mod tests {
    use super::index_key;

    #[test]
    fn keys_are_stable() {
        // Pinned values: these are stored on disk and must never change.
        let pinned = [index_key("wf-1"), index_key("wf-1-stage-0"), index_key("01J0000000000000000000000")];
        assert_eq!(pinned, [PINNED_WF, PINNED_STAGE, PINNED_ULID]);
    }

    #[test]
    fn keys_fit_four_bytes_and_spread() {
        let keys: std::collections::HashSet<i64> =
            (0..10_000).map(|i| index_key(&format!("wf-{i}"))).collect();
        assert!(keys.iter().all(|k| (0..=i64::from(i32::MAX)).contains(k)));
        assert!(keys.len() > 9_990, "{} distinct keys of 10000", keys.len());
    }

    const PINNED_WF: i64 = 2_045_387_987;
    const PINNED_STAGE: i64 = 1_104_019_014;
    const PINNED_ULID: i64 = 1_958_542_578;
}
