//! A small map of answers that expire, for token reviews and access reviews: a client repeating
//! its request (a follow, a poll) costs the API server one review per TTL, as with kubelet.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most; past it the expired go, then everything if need be.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug)]
pub struct TtlCache<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> Default for TtlCache<K, V> {
    fn default() -> Self {
        TtlCache {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn get(&self, k: &K) -> Option<V> {
        let map = self.map.lock().ok()?;
        map.get(k)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(v, _)| v.clone())
    }

    pub fn put(&self, k: K, v: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let Ok(mut map) = self.map.lock() else {
            return;
        };
        if map.len() >= MAX_ENTRIES {
            let now = Instant::now();
            map.retain(|_, (_, until)| now < *until);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(k, (v, Instant::now() + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let c = TtlCache::default();
        c.put("a".to_string(), 1, Duration::from_millis(30));
        c.put("b".to_string(), 2, Duration::ZERO);
        assert_eq!(c.get(&"a".to_string()), Some(1));
        assert_eq!(c.get(&"b".to_string()), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(&"a".to_string()), None);
        for i in 0..MAX_ENTRIES + 10 {
            c.put(i.to_string(), i, Duration::from_secs(9));
        }
        assert!(c.map.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
