//! Repeats: records held back behind an earlier record of the same round
//! with the same dedupe key (the same event twice in one fetched chunk).
//!
//! A repeat is settled by the round that holds it: if the earlier record
//! was found already stored, or was delivered by the round, the repeat is
//! a duplicate and the round's commit moves the offset past it, in the
//! same transaction that stores the key. Only a repeat whose earlier
//! record failed (dead-lettered) is tried again in the next round. Before,
//! every repeat cost its chunk a second round: a store commit with its
//! fsync, and a 2 ms wait meant for keys held on other partitions (the
//! bench data holds repeats in 299 of its 317 chunks).

/// A few digests, sorted, each with a mark. Held records and repeats are
/// few, so many digests (a round's) are looked up among them by binary
/// search: no hash set built per round.
pub(super) struct FewDigests {
    digests: Vec<u128>,
    marked: Vec<bool>,
}

impl FewDigests {
    pub(super) fn new(digests: impl IntoIterator<Item = u128>) -> Self {
        let mut digests: Vec<u128> = digests.into_iter().collect();
        digests.sort_unstable();
        digests.dedup();
        let marked = vec![false; digests.len()];
        FewDigests { digests, marked }
    }

    /// Mark each of `ds` that is one of these digests.
    pub(super) fn mark_each(&mut self, ds: impl IntoIterator<Item = u128>) {
        if self.digests.is_empty() {
            return;
        }
        for d in ds {
            if let Ok(at) = self.digests.binary_search(&d) {
                self.marked[at] = true;
            }
        }
    }

    pub(super) fn is_marked(&self, d: u128) -> bool {
        self.digests
            .binary_search(&d)
            .is_ok_and(|at| self.marked[at])
    }
}

#[cfg(test)]
mod tests {
    use super::FewDigests;

    #[test]
    fn marks_only_its_own_digests() {
        let mut few = FewDigests::new([9, 3, 3, 7]);
        few.mark_each([1, 3, 8, 9, 10]);
        assert!(few.is_marked(3));
        assert!(few.is_marked(9));
        assert!(!few.is_marked(7), "never marked");
        assert!(!few.is_marked(1), "not one of them");
        let mut none = FewDigests::new([]);
        none.mark_each([1, 2]);
        assert!(!none.is_marked(1));
    }
}
