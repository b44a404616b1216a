//! The store of resource ads and the foca broadcast handler that feeds it.
//!
//! foca owns its broadcast handler and offers no accessor to it, so the handler and the
//! membership core share one [`AdStore`] through a [`Shared`] handle.
//!
//! The store holds each ad behind an `Arc`, so that the cores of one process can hold one
//! copy of an ad between them ([`AdCache`]): the simulator runs a thousand cores, each holding
//! every member's ad, and once converged those are the same thousand values held a thousand
//! times.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use compact_str::CompactString;
use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::types::{NodeId, ResourceAd};
use crate::wire::{self, DecodeError};

/// Newest ad per node name, plus the names that changed since the core last looked.
#[derive(Debug, Default)]
pub(crate) struct AdStore {
    pub(crate) ads: BTreeMap<CompactString, Arc<ResourceAd>>,
    /// `ResourceAd::key` by node, mirroring `ads`: most offers are ads already known, and
    /// hashing the name answers that faster than a B-tree walk of string compares.
    pub(crate) keys: FxHashMap<CompactString, (u64, u64)>,
    pub(crate) changed: Vec<CompactString>,
    /// `wire::digest` of `ads`, kept current on every change.
    digest: wire::Digest,
    /// Where ads are shared with the other cores of this process, if anywhere.
    pub(crate) cache: Option<AdCache>,
    /// Nodes the view let go of (`membership/reap.rs`), with the newest generation it held:
    /// an ad of that generation or an older one is refused while the name is here, so a peer
    /// that has not let go yet cannot hand it back.
    pub(crate) reaped: FxHashMap<CompactString, u64>,
}

impl AdStore {
    /// Keeps `ad` if it is newer than what is known for its node; returns whether it was.
    pub(crate) fn offer(&mut self, ad: ResourceAd) -> bool {
        if !self.reaped.is_empty()
            && self
                .reaped
                .get(&ad.node)
                .is_some_and(|&g| ad.generation <= g)
        {
            return false;
        }
        let key = ad.key();
        let newer = match self.keys.get_mut(&ad.node) {
            Some(known) if *known >= key => false,
            Some(known) => {
                *known = key;
                true
            }
            None => {
                self.keys.insert(ad.node.clone(), key);
                true
            }
        };
        if newer {
            self.changed.push(ad.node.clone());
            let bucket = &mut self.digest[wire::bucket_of(&ad.node)];
            *bucket = bucket.wrapping_add(wire::ad_hash(&ad));
            let name = ad.node.clone();
            let ad = match &self.cache {
                Some(cache) => cache.intern(ad),
                None => Arc::new(ad),
            };
            if let Some(old) = self.ads.insert(name, ad) {
                *bucket = bucket.wrapping_sub(wire::ad_hash(&old));
            }
            debug_assert_eq!(self.digest, wire::digest(self.ads.values().map(|a| &**a)));
        }
        newer
    }

    /// Drops the ad of `name` if it is of `generation` or older, and refuses such ads from
    /// now on, until [`AdStore::unreap`].
    pub(crate) fn reap(&mut self, name: &CompactString, generation: u64) {
        if self
            .ads
            .get(name)
            .is_some_and(|ad| ad.generation <= generation)
            && let Some(old) = self.ads.remove(name)
        {
            self.keys.remove(name);
            let bucket = &mut self.digest[wire::bucket_of(name)];
            *bucket = bucket.wrapping_sub(wire::ad_hash(&old));
            debug_assert_eq!(self.digest, wire::digest(self.ads.values().map(|a| &**a)));
        }
        self.reaped.insert(name.clone(), generation);
    }

    /// Accepts ads of `name` again.
    pub(crate) fn unreap(&mut self, name: &str) {
        self.reaped.remove(name);
    }

    pub(crate) fn digest(&self) -> wire::Digest {
        self.digest
    }

    /// Every ad in the buckets where `theirs` differs from this store's digest, encoded, in
    /// name order: what a peer with digest `theirs` may lack. Encoded here, on demand: a
    /// node answers a sync every few seconds, but receives hundreds of new ad versions a
    /// second at 200 nodes, so keeping every ad's encoding cost far more than it saved.
    pub(crate) fn encoded_differing(&self, theirs: &wire::Digest) -> Vec<Vec<u8>> {
        self.ads
            .iter()
            .filter(|(name, _)| {
                let b = wire::bucket_of(name);
                self.digest[b] != theirs[b]
            })
            .map(|(_, ad)| wire::encode_ad(ad))
            .collect()
    }
}

/// One copy of each ad for every membership core of a process that is given the same cache
/// ([`crate::Membership::share_ads`]): the simulator's. An agent runs one core and needs none.
///
/// An ad is shared only with an equal one (same name, generation, version and every field):
/// two different ads under one key (a forged or corrupted datagram) are each kept whole, so
/// sharing changes what a core holds in memory, never what it holds as a value. Entries no
/// core holds any more are swept when the cache has doubled since the last sweep.
#[derive(Debug, Clone, Default)]
pub struct AdCache(Shared<AdCacheInner>);

#[derive(Debug, Default)]
struct AdCacheInner {
    by_key: FxHashMap<(CompactString, u64, u64), Arc<ResourceAd>>,
    /// Entries left after the last sweep.
    kept: usize,
}

impl AdCache {
    /// The shared copy of `ad`: the one already cached if it is equal, else `ad`, now cached.
    pub(crate) fn intern(&self, ad: ResourceAd) -> Arc<ResourceAd> {
        let mut inner = self.0.lock();
        let key = (ad.node.clone(), ad.generation, ad.version);
        if let Some(shared) = inner.by_key.get(&key)
            && **shared == ad
        {
            return Arc::clone(shared);
        }
        let ad = Arc::new(ad);
        inner.by_key.insert(key, Arc::clone(&ad));
        if inner.by_key.len() > 2 * inner.kept.max(1024) {
            inner.by_key.retain(|_, a| Arc::strong_count(a) > 1);
            inner.kept = inner.by_key.len();
        }
        ad
    }

    /// Ads cached, whether or not a core still holds them.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.lock().by_key.len()
    }

    /// Whether nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// State shared between the membership core and a part foca owns (its broadcast handler or
/// codec), which foca offers no accessor to. The lock is never contended: the core is driven
/// by one task at a time.
#[derive(Debug, Default)]
pub(crate) struct Shared<T>(Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T> Shared<T> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        // A poisoned lock means a panic happened while holding it, in this same task; the
        // state is plain data and stays consistent, so carry on with it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A shared handle on the store.
pub(crate) type SharedAds = Shared<AdStore>;

/// foca's invalidation key for an ad: a newer `(generation, version)` of the same node
/// replaces an older one in the broadcast backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdKey {
    /// Hash of `node`, compared first: foca checks a new key against its whole backlog.
    node_hash: u64,
    node: CompactString,
    key: (u64, u64),
}

impl foca::Invalidates for AdKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.node_hash == other.node_hash && self.node == other.node && self.key >= other.key
    }
}

/// The broadcast handler foca calls for every ad it receives (or that we add).
#[derive(Debug)]
pub(crate) struct AdHandler(pub(crate) SharedAds);

impl foca::BroadcastHandler<NodeId> for AdHandler {
    type Key = AdKey;
    type Error = DecodeError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&NodeId>,
    ) -> Result<Option<AdKey>, DecodeError> {
        // Most ads a node receives it already holds (each is piggy-backed many times): read
        // only the name and key first, and decode the whole ad only when it is news.
        if let Some((node, key)) = wire::peek_ad_key(data)
            && self
                .0
                .lock()
                .keys
                .get(node)
                .is_some_and(|&known| known >= key)
        {
            return Ok(None);
        }
        let ad = wire::decode_ad(data)?;
        let key = AdKey {
            node_hash: FxBuildHasher.hash_one(&ad.node),
            node: ad.node.clone(),
            key: ad.key(),
        };
        // Returning `None` for known data stops foca from spreading it again.
        Ok(self.0.lock().offer(ad).then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Resources;

    fn ad(node: &str, version: u64) -> ResourceAd {
        ResourceAd {
            generation: 1,
            version,
            ..ResourceAd::new(node, Resources::default())
        }
    }

    #[test]
    fn a_sync_reply_holds_only_the_buckets_that_differ() {
        let mut ours = AdStore::default();
        let mut theirs = AdStore::default();
        for i in 0..200 {
            ours.offer(ad(&format!("n{i}"), 1));
            theirs.offer(ad(&format!("n{i}"), 1));
        }
        assert_eq!(ours.digest(), theirs.digest());
        assert!(ours.encoded_differing(&theirs.digest()).is_empty());

        ours.offer(ad("n7", 2));
        let reply = ours.encoded_differing(&theirs.digest());
        let bucket = wire::bucket_of("n7");
        let expected = (0..200)
            .filter(|i| wire::bucket_of(&format!("n{i}")) == bucket)
            .count();
        assert_eq!(reply.len(), expected, "one bucket's ads, not all 200");
        assert!(reply.len() < 50);
        assert!(reply.contains(&wire::encode_ad(&ad("n7", 2))));

        for bytes in &reply {
            theirs.offer(wire::decode_ad(bytes).unwrap());
        }
        assert_eq!(
            ours.digest(),
            theirs.digest(),
            "the reply converges the stores"
        );
    }

    #[test]
    fn stores_sharing_a_cache_hold_one_copy_of_equal_ads_only() {
        let cache = AdCache::default();
        let mut stores: Vec<AdStore> = (0..3)
            .map(|_| AdStore {
                cache: Some(cache.clone()),
                ..AdStore::default()
            })
            .collect();
        for store in &mut stores {
            assert!(store.offer(ad("n1", 2)));
        }
        let held = |store: &AdStore| Arc::clone(&store.ads["n1"]);
        assert!(Arc::ptr_eq(&held(&stores[0]), &held(&stores[2])));

        // Another ad under the same key (a forged or corrupted one) is kept as it came.
        let mut forged = AdStore {
            cache: Some(cache.clone()),
            ..AdStore::default()
        };
        let mut odd = ad("n1", 2);
        odd.draining = true;
        assert!(forged.offer(odd.clone()));
        assert_eq!(*forged.ads["n1"], odd);
        assert_eq!(*stores[1].ads["n1"], ad("n1", 2));
        assert_eq!(forged.digest(), {
            let mut alone = AdStore::default();
            alone.offer(odd);
            alone.digest()
        });
    }

    #[test]
    fn the_cache_forgets_ads_no_store_holds() {
        let cache = AdCache::default();
        let mut store = AdStore {
            cache: Some(cache.clone()),
            ..AdStore::default()
        };
        for version in 1..=5_000 {
            store.offer(ad("n1", version));
        }
        assert!(cache.len() <= 2 * 1024 + 1, "swept: {} left", cache.len());
        assert!(Arc::ptr_eq(
            &store.ads["n1"],
            &cache.intern(ad("n1", 5_000))
        ));
    }
}
