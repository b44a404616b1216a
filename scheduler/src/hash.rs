//! Deterministic hashing and randomness.
//!
//! Every node must compute the same slot coordinator from the same member list, in every process
//! and on every platform, so nothing here uses `std`'s randomly keyed `RandomState`. The hash is
//! FNV-1a over the bytes followed by the SplitMix64 finaliser (FNV alone mixes the last bytes
//! poorly, which matters for rendezvous scores of names like `n1`, `n2`). The RNG is SplitMix64,
//! seeded by the caller: the simulator derives the seed from its run seed, the agent from the OS.

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// An incremental FNV-1a hasher with a strong finaliser. Fields are separated by a `0xff` byte
/// (which never occurs in UTF-8) so `("ab", "c")` and `("a", "bc")` hash differently.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StableHasher(u64);

impl StableHasher {
    /// A fresh hasher.
    pub(crate) fn new() -> Self {
        Self(FNV_OFFSET)
    }

    /// Feed one field.
    pub(crate) fn field(mut self, bytes: &[u8]) -> Self {
        for &b in bytes.iter().chain(std::iter::once(&0xff)) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
        self
    }

    /// Feed one integer field.
    pub(crate) fn int(self, v: u64) -> Self {
        self.field(&v.to_le_bytes())
    }

    /// The finished, well-mixed 64-bit hash.
    pub(crate) fn finish(self) -> u64 {
        mix64(self.0)
    }
}

/// The SplitMix64 finaliser: a bijective avalanche over 64 bits.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Stable hash of a node name, precomputed once per membership change.
pub(crate) fn name_hash(name: &str) -> u64 {
    StableHasher::new().field(name.as_bytes()).finish()
}

/// Rendezvous (highest random weight) choice: the member whose combined score with `key` is
/// highest; ties (astronomically unlikely) go to the larger name so the result never depends on
/// input order. `members` yields `(name, name_hash(name))`.
pub(crate) fn rendezvous<'a>(
    key: u64,
    members: impl IntoIterator<Item = (&'a str, u64)>,
) -> Option<&'a str> {
    members
        .into_iter()
        .map(|(name, h)| (mix64(key ^ h), name))
        .max()
        .map(|(_, name)| name)
}

/// Whether `me` wins [`rendezvous`] over `members`, which must include it: the same answer as
/// `rendezvous(key, members) == Some(me.0)`, found by stopping at the first member that
/// outscores `me`. Scores are independent of order, so for a key `me` does not win the scan
/// ends after about ln N members on average.
pub(crate) fn rendezvous_is<'a>(
    key: u64,
    me: (&str, u64),
    members: impl IntoIterator<Item = (&'a str, u64)>,
) -> bool {
    let mine = (mix64(key ^ me.1), me.0);
    members
        .into_iter()
        .all(|(name, h)| (mix64(key ^ h), name) <= mine)
}

/// A small deterministic RNG (SplitMix64). Not cryptographic; used for jitter and peer choice.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// An RNG from a seed; equal seeds give equal streams.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A value in `0..n` (0 when `n == 0`). The modulo bias is irrelevant for jitter.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_across_runs() {
        // Pinned value: if this changes, coordinators change on upgrade.
        let h = StableHasher::new().field(b"web").int(3).finish();
        assert_eq!(h, StableHasher::new().field(b"web").int(3).finish());
        assert_ne!(h, StableHasher::new().field(b"web").int(4).finish());
        assert_ne!(
            StableHasher::new().field(b"ab").field(b"c").finish(),
            StableHasher::new().field(b"a").field(b"bc").finish()
        );
    }

    #[test]
    fn rendezvous_ignores_order_and_moves_little() {
        let names = ["n1", "n2", "n3", "n4", "n5"];
        let with = |ns: &[&'static str]| -> Vec<&'static str> {
            (0..1000u64)
                .map(|k| rendezvous(mix64(k), ns.iter().map(|n| (*n, name_hash(n)))).unwrap())
                .collect()
        };
        let all = with(&names);
        let mut rev = names;
        rev.reverse();
        assert_eq!(all, with(&rev));
        // Removing n3 only moves the keys n3 owned.
        let without = with(&["n1", "n2", "n4", "n5"]);
        for (a, b) in all.iter().zip(&without) {
            if *a != "n3" {
                assert_eq!(a, b);
            }
        }
        // Roughly balanced.
        for n in names {
            let c = all.iter().filter(|x| **x == n).count();
            assert!((120..=280).contains(&c), "{n} got {c}");
        }
    }

    #[test]
    fn rendezvous_is_agrees_with_rendezvous() {
        let names: Vec<String> = (0..50).map(|i| format!("n{i}")).collect();
        let members: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), name_hash(n))).collect();
        let mut wins = 0;
        for k in 0..2000u64 {
            let key = mix64(k);
            let winner = rendezvous(key, members.iter().copied()).unwrap();
            for &me in &members {
                let is = rendezvous_is(key, me, members.iter().copied());
                assert_eq!(is, winner == me.0, "key {k}, member {}", me.0);
                wins += usize::from(is);
            }
        }
        assert_eq!(wins, 2000, "exactly one winner per key");
    }

    #[test]
    fn rng_is_deterministic() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_eq!(Rng::new(1).below(0), 0);
    }
}
