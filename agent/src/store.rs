//! Records of sandboxes and containers: one JSON file each, written atomically, mirrored in memory.
//!
//! A table is the source of truth across restarts of skiffd: it is loaded whole at start-up and every
//! change is on disk before it is visible in memory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Something a table holds.
pub trait Record: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    fn id(&self) -> &str;
}

pub struct Table<T> {
    dir: PathBuf,
    rows: RwLock<BTreeMap<String, T>>,
    /// One async mutex per id, so that operations on the same object run one at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl<T: Record> Table<T> {
    /// Opens (creating) `dir` and loads every record in it; unreadable files are reported and skipped.
    pub fn open(dir: &Path) -> Result<Table<T>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            what: "create",
            path: dir.into(),
            source,
        })?;
        let mut rows = BTreeMap::new();
        let entries = std::fs::read_dir(dir).map_err(|source| StoreError::Io {
            what: "read",
            path: dir.into(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match read_record::<T>(&path) {
                Ok(r) => {
                    rows.insert(r.id().to_owned(), r);
                }
                Err(e) => tracing::warn!("skipping record: {e}"),
            }
        }
        Ok(Table {
            dir: dir.into(),
            rows: RwLock::new(rows),
            locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn get(&self, id: &str) -> Option<T> {
        self.read().get(id).cloned()
    }

    /// The full id that `id` names: itself when a record has that id, else the only id it is a
    /// prefix of (crictl shows ids cut to 13 characters, and its users type them so). `Ok(None)` when
    /// it names nothing, `Err(n)` when it is a prefix of `n` > 1 ids.
    pub fn full_id(&self, id: &str) -> Result<Option<String>, usize> {
        let rows = self.read();
        if rows.contains_key(id) {
            return Ok(Some(id.to_owned()));
        }
        let mut hits = rows
            .range::<str, _>((std::ops::Bound::Excluded(id), std::ops::Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(id));
        match (hits.next(), hits.next()) {
            (None, _) => Ok(None),
            (Some(k), None) => Ok(Some(k.clone())),
            (Some(_), Some(_)) => Err(2 + hits.count()),
        }
    }

    pub fn list(&self) -> Vec<T> {
        self.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes `row` to disk, then makes it visible.
    pub fn put(&self, row: &T) -> Result<(), StoreError> {
        let path = self.path(row.id());
        let data = serde_json::to_vec(row).map_err(|source| StoreError::Json {
            path: path.clone(),
            source,
        })?;
        skiff_runtime::state::write_atomic(&path, &data, 0o600).map_err(|e| StoreError::Io {
            what: "write",
            path,
            source: std::io::Error::other(e.to_string()),
        })?;
        self.write().insert(row.id().to_owned(), row.clone());
        Ok(())
    }

    /// Changes the record `id` with `f` and stores it; `None` if there is no such record.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut T)) -> Result<Option<T>, StoreError> {
        let Some(mut row) = self.get(id) else {
            return Ok(None);
        };
        f(&mut row);
        self.put(&row)?;
        Ok(Some(row))
    }

    /// Forgets `id`, on disk first. Removing what is not there is not an error.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    what: "remove",
                    path,
                    source,
                })
            }
        }
        self.write().remove(id);
        self.locks_map().remove(id);
        Ok(())
    }

    /// Serialises operations on one object (stop vs remove, start vs stop, ...).
    pub async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .locks_map()
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        m.lock_owned().await
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, T>> {
        self.rows.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, T>> {
        self.rows.write().unwrap_or_else(|p| p.into_inner())
    }

    fn locks_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn read_record<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let data = std::fs::read(path).map_err(|source| StoreError::Io {
        what: "read",
        path: path.into(),
        source,
    })?;
    serde_json::from_slice(&data).map_err(|source| StoreError::Json {
        path: path.into(),
        source,
    })
}

/// Serde for a CRI message inside a JSON record: its protobuf encoding, base64. The CRI types are
/// prost messages, not serde types, and the protobuf form keeps every field kubelet sent.
pub mod proto_b64 {
    use base64::Engine;
    use prost::Message;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Message, S: Serializer>(msg: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(msg.encode_to_vec()))
    }

    pub fn deserialize<'de, T: Message + Default, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)?;
        T::decode(bytes.as_slice()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Clone, Serialize, Deserialize, PartialEq, Debug)]
    struct Row {
        id: String,
        n: u32,
        #[serde(with = "proto_b64")]
        cfg: cri_api::v1::PodSandboxMetadata,
    }

    impl Record for Row {
        fn id(&self) -> &str {
            &self.id
        }
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let t: Table<Row> = Table::open(dir.path()).unwrap();
        let cfg = cri_api::v1::PodSandboxMetadata {
            name: "web".into(),
            uid: "u1".into(),
            namespace: "default".into(),
            attempt: 2,
        };
        t.put(&Row {
            id: "a".into(),
            n: 1,
            cfg: cfg.clone(),
        })
        .unwrap();
        t.put(&Row {
            id: "b".into(),
            n: 2,
            cfg: cfg.clone(),
        })
        .unwrap();
        t.update("a", |r| r.n = 7).unwrap();
        t.remove("b").unwrap();
        t.remove("b").unwrap();
        std::fs::write(dir.path().join("junk.json"), b"{").unwrap();
        let t: Table<Row> = Table::open(dir.path()).unwrap();
        assert_eq!(
            t.list(),
            vec![Row {
                id: "a".into(),
                n: 7,
                cfg
            }]
        );
    }

    #[test]
    fn ids_by_unique_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let t: Table<Row> = Table::open(dir.path()).unwrap();
        for id in ["abc1", "abc2", "abd", "b"] {
            t.put(&Row {
                id: id.into(),
                n: 0,
                cfg: Default::default(),
            })
            .unwrap();
        }
        assert_eq!(t.full_id("b"), Ok(Some("b".into())));
        assert_eq!(t.full_id("abd"), Ok(Some("abd".into())));
        assert_eq!(t.full_id("abc2"), Ok(Some("abc2".into())));
        assert_eq!(t.full_id("abd0"), Ok(None));
        assert_eq!(t.full_id("c"), Ok(None));
        assert_eq!(t.full_id("abc"), Err(2));
        assert_eq!(t.full_id("a"), Err(3));
    }
}
