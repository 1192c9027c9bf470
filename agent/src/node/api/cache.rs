//! A small map of answers that expire, for token reviews and access reviews: a client repeating
//! its request (a follow, a poll) costs the API server one review per TTL, as with kubelet.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Entries kept at most; past it the expired go, then everything if need be.
const MAX_ENTRIES: usize = 4096;

/// What time it is: `Instant::now`, or a test's own clock.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

pub struct TtlCache<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
    now: Clock,
}

impl<K: Eq + Hash, V: Clone> Default for TtlCache<K, V> {
    fn default() -> Self {
        TtlCache::with_clock(Arc::new(Instant::now))
    }
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn with_clock(now: Clock) -> Self {
        TtlCache {
            map: Mutex::new(HashMap::new()),
            now,
        }
    }

    pub fn get(&self, k: &K) -> Option<V> {
        let map = self.map.lock().ok()?;
        let now = (self.now)();
        map.get(k)
            .filter(|(_, until)| now < *until)
            .map(|(v, _)| v.clone())
    }

    pub fn put(&self, k: K, v: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let Ok(mut map) = self.map.lock() else {
            return;
        };
        let now = (self.now)();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, until)| now < *until);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(k, (v, now + ttl));
    }
}

/// A clock for tests that moves only when told.
#[cfg(test)]
pub mod test_clock {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    #[derive(Clone)]
    pub struct Manual(Arc<Mutex<Instant>>);

    impl Default for Manual {
        fn default() -> Manual {
            Manual(Arc::new(Mutex::new(Instant::now())))
        }
    }

    impl Manual {
        pub fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }

        pub fn clock(&self) -> super::Clock {
            let at = self.0.clone();
            Arc::new(move || *at.lock().unwrap())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let t = test_clock::Manual::default();
        let c = TtlCache::with_clock(t.clock());
        c.put("a".to_string(), 1, Duration::from_secs(30));
        c.put("b".to_string(), 2, Duration::ZERO);
        assert_eq!(c.get(&"a".to_string()), Some(1));
        assert_eq!(c.get(&"b".to_string()), None);
        t.advance(Duration::from_secs(29));
        assert_eq!(c.get(&"a".to_string()), Some(1));
        t.advance(Duration::from_secs(1));
        assert_eq!(c.get(&"a".to_string()), None);
        for i in 0..MAX_ENTRIES + 10 {
            c.put(i.to_string(), i, Duration::from_secs(9));
        }
        assert!(c.map.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
