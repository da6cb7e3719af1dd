//! A map read on every request and written almost never (a new cluster name, a new
//! endpoint): readers load an `Arc` snapshot without locking; a writer copies the map under
//! a mutex and swaps the copy in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

pub struct CowMap<V> {
    map: ArcSwap<HashMap<Arc<str>, V>>,
    insert: Mutex<()>,
}

impl<V> Default for CowMap<V> {
    fn default() -> Self {
        CowMap {
            map: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
        }
    }
}

impl<V: Clone> CowMap<V> {
    /// The value for `key`, made by `make` and kept the first time it is asked for.
    pub fn get_or_insert_with(&self, key: &str, make: impl FnOnce() -> V) -> V {
        if let Some(v) = self.map.load().get(key) {
            return v.clone();
        }
        // A poisoned lock guards no data, only the order of inserts.
        let _guard = self.insert.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.map.load_full();
        if let Some(v) = current.get(key) {
            return v.clone();
        }
        let value = make();
        let mut next = HashMap::clone(&current);
        next.insert(Arc::from(key), value.clone());
        self.map.store(Arc::new(next));
        value
    }

    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_each_value_once() {
        let map = CowMap::default();
        let mut made = 0;
        for _ in 0..3 {
            let v = map.get_or_insert_with("a", || {
                made += 1;
                7
            });
            assert_eq!(v, 7);
        }
        assert_eq!(made, 1);
        assert_eq!(map.get_or_insert_with("b", || 8), 8);
        assert_eq!(map.len(), 2);
    }
}
