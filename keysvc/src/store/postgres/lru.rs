//! A small least-recently-used map: the bounded set of dedicated-database pools.

use std::collections::HashMap;
use std::hash::Hash;

/// At most `capacity` entries; inserting into a full map evicts the entry used longest ago.
/// Lookups scan nothing, eviction scans every entry: fine for the few dozen pools it holds.
#[derive(Debug)]
pub(super) struct Lru<K, V> {
    capacity: usize,
    clock: u64,
    entries: HashMap<K, (V, u64)>,
}

impl<K: Eq + Hash + Clone, V: Clone> Lru<K, V> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            clock: 0,
            entries: HashMap::new(),
        }
    }

    /// The value for `key`, marked as just used.
    pub(super) fn get(&mut self, key: &K) -> Option<V> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(value, used)| {
            *used = clock;
            value.clone()
        })
    }

    /// Inserts `value` (replacing any value for `key`); returns what had to make room.
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.clock += 1;
        let mut evicted = None;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            evicted = oldest.and_then(|k| self.entries.remove(&k)).map(|(v, _)| v);
        }
        if let Some((replaced, _)) = self.entries.insert(key, (value, self.clock)) {
            evicted = Some(replaced);
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut lru = Lru::new(2);
        assert_eq!(lru.insert("a", 1), None);
        assert_eq!(lru.insert("b", 2), None);
        assert_eq!(lru.get(&"a"), Some(1));
        assert_eq!(lru.insert("c", 3), Some(2), "b was used longest ago");
        assert_eq!(lru.get(&"b"), None);
        assert_eq!(lru.get(&"a"), Some(1));
        assert_eq!(lru.get(&"c"), Some(3));
        assert_eq!(
            lru.insert("c", 4),
            Some(3),
            "replacing returns the old value"
        );
        assert_eq!(lru.insert("d", 5), Some(1), "a was used longest ago");
        assert_eq!(lru.get(&"c"), Some(4));
    }
}
