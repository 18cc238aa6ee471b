//! Object storage for the master dataset and the batch-view segments (DESIGN §5, §7): a local
//! folder or an S3-compatible bucket (and prefix), through the `object_store` crate.
//!
//! Every object appears atomically: one PUT on S3; locally a staging file renamed into place,
//! then the file and its folder fsynced (so a crash never leaves a half-written object visible,
//! and a visible one survives power loss).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

/// Errors of object-storage I/O.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// A local file or folder operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The object store refused or failed a request (S3: network, credentials, bucket).
    #[error("{context}: {source}")]
    Store {
        /// What was being done.
        context: String,
        /// What the object store said.
        #[source]
        source: object_store::Error,
    },
    /// The location cannot be used (bad scheme, bad S3 settings).
    #[error("storage location {0}")]
    Location(String),
}

impl ObjectError {
    /// True when the object does not exist (rather than the store failing).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ObjectError::Store { source: object_store::Error::NotFound { .. }, .. })
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ObjectError {
    let context = context.into();
    move |source| ObjectError::Io { context, source }
}

fn store_err(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> ObjectError {
    let context = context.into();
    move |source| ObjectError::Store { context, source }
}

/// A storage root: a local folder or an S3-compatible bucket/prefix. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ObjectLocation {
    store: Arc<dyn ObjectStore>,
    /// The folder, when local: objects are also fsynced there (object stores are durable on put).
    local_root: Option<PathBuf>,
    /// Where it is, for messages.
    url: String,
}

impl ObjectLocation {
    /// Opens the location `spec` names:
    /// - a local path or `file:///path` (created if missing);
    /// - `s3://bucket[/prefix]`: credentials, region and endpoint come from the standard
    ///   `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    ///   `AWS_ENDPOINT` for S3-compatible servers, `AWS_ALLOW_HTTP=true` for plain-HTTP
    ///   endpoints); requests are path-style unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
    ///
    /// Errors: [`ObjectError::Location`] for another scheme or a bad S3 configuration;
    /// [`ObjectError::Io`] when the local folder cannot be created.
    pub fn open(spec: &str) -> Result<ObjectLocation, ObjectError> {
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ObjectError::Location(format!("{spec:?}: no bucket after s3://")));
            }
            // rustls needs a process-wide crypto provider; a second install is a harmless no-op.
            let _ = rustls::crypto::ring::default_provider().install_default();
            // A few quick retries, not the library's three minutes: a store that is down must
            // show as not ready, and the layer's supervisor retries with its own backoff.
            let retry = RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(15), ..RetryConfig::default() };
            let connect_timeout = AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout);
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry);
            if builder.get_config_value(&connect_timeout).is_none() {
                builder = builder.with_config(connect_timeout, "5s");
            }
            let s3 = builder.build().map_err(|e| ObjectError::Location(format!("{spec:?}: {e}")))?;
            let prefix = prefix.trim_matches('/');
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix)) };
            return Ok(ObjectLocation { store, local_root: None, url: spec.to_string() });
        }
        if spec.contains("://") && !spec.starts_with("file://") {
            return Err(ObjectError::Location(format!("{spec:?}: use a local path, file:///path or s3://bucket/prefix")));
        }
        ObjectLocation::local(Path::new(spec.strip_prefix("file://").unwrap_or(spec)))
    }

    /// The local folder `root` (created if missing).
    ///
    /// Errors: [`ObjectError::Io`], [`ObjectError::Location`].
    pub fn local(root: &Path) -> Result<ObjectLocation, ObjectError> {
        std::fs::create_dir_all(root).map_err(io(format!("creating {}", root.display())))?;
        let fs = LocalFileSystem::new_with_prefix(root).map_err(|e| ObjectError::Location(format!("{}: {e}", root.display())))?;
        Ok(ObjectLocation { store: Arc::new(fs), local_root: Some(root.to_path_buf()), url: root.display().to_string() })
    }

    /// Where it is (a folder or an `s3://` URL), for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying object store (for readers such as Parquet's async reader).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The folder, when the location is local.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    /// Checks that the location answers (for `/readyz`): lists `prefix`.
    ///
    /// Errors: [`ObjectError::Store`].
    pub async fn check(&self, prefix: &str) -> Result<(), ObjectError> {
        let prefix = ObjectPath::from(prefix);
        self.store.list_with_delimiter(Some(&prefix)).await.map(|_| ()).map_err(store_err(format!("{}: listing", self.url)))
    }

    /// Writes `bytes` at `path` atomically: the object appears whole or not at all, and a local
    /// file is fsynced with its folder before this returns.
    ///
    /// Errors: [`ObjectError`].
    pub async fn put_atomic(&self, path: &ObjectPath, bytes: Bytes) -> Result<(), ObjectError> {
        self.store.put(path, PutPayload::from(bytes)).await.map_err(store_err(format!("writing {path}")))?;
        if let Some(root) = &self.local_root {
            // LocalFileSystem renames a finished staging file into place but does not fsync.
            let file = root.join(path.as_ref());
            tokio::task::spawn_blocking(move || sync_file_and_folder(&file))
                .await
                .map_err(|e| ObjectError::Io { context: "fsync task".into(), source: std::io::Error::other(e.to_string()) })??;
        }
        Ok(())
    }

    /// Reads a whole object.
    ///
    /// Errors: [`ObjectError::Store`] (see [`ObjectError::is_not_found`]).
    pub async fn get(&self, path: &ObjectPath) -> Result<Bytes, ObjectError> {
        let context = || format!("reading {path}");
        self.store.get(path).await.map_err(store_err(context()))?.bytes().await.map_err(store_err(context()))
    }

    /// Reads bytes `range` of an object.
    ///
    /// Errors: [`ObjectError::Store`].
    pub async fn get_range(&self, path: &ObjectPath, range: Range<u64>) -> Result<Bytes, ObjectError> {
        self.store.get_range(path, range).await.map_err(store_err(format!("reading {path}")))
    }

    /// Reads several byte `ranges` of an object in one request (one file open locally; nearby
    /// ranges coalesced on S3), in the order given.
    ///
    /// Errors: [`ObjectError::Store`].
    pub async fn get_ranges(&self, path: &ObjectPath, ranges: &[Range<u64>]) -> Result<Vec<Bytes>, ObjectError> {
        self.store.get_ranges(path, ranges).await.map_err(store_err(format!("reading {path}")))
    }

    /// Reads the last `n` bytes of an object (all of it when it is shorter).
    ///
    /// Errors: [`ObjectError::Store`].
    pub async fn get_suffix(&self, path: &ObjectPath, n: u64) -> Result<Bytes, ObjectError> {
        let context = || format!("reading the end of {path}");
        let options = object_store::GetOptions { range: Some(object_store::GetRange::Suffix(n)), ..Default::default() };
        self.store.get_opts(path, options).await.map_err(store_err(context()))?.bytes().await.map_err(store_err(context()))
    }

    /// Size of an object, bytes.
    ///
    /// Errors: [`ObjectError::Store`].
    pub async fn size(&self, path: &ObjectPath) -> Result<u64, ObjectError> {
        Ok(self.store.head(path).await.map_err(store_err(format!("looking up {path}")))?.size)
    }

    /// Every object under `prefix` (recursively), in no particular order.
    ///
    /// Errors: [`ObjectError::Store`].
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        let prefix = ObjectPath::from(prefix);
        self.store.list(Some(&prefix)).try_collect().await.map_err(store_err(format!("{}: listing {prefix}", self.url)))
    }

    /// Deletes an object; deleting one that is already gone is not an error.
    ///
    /// Errors: [`ObjectError::Store`].
    pub async fn delete(&self, path: &ObjectPath) -> Result<(), ObjectError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(format!("removing {path}"))(e)),
        }
    }
}

fn sync_file_and_folder(file: &Path) -> Result<(), ObjectError> {
    std::fs::File::open(file).and_then(|f| f.sync_all()).map_err(io(format!("syncing {}", file.display())))?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(format!("syncing {}", dir.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_round_trip_and_listing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loc = ObjectLocation::open(&dir.path().display().to_string()).expect("open");
        let path = ObjectPath::from("a/b/c.bin");
        loc.put_atomic(&path, Bytes::from_static(b"hello")).await.expect("put");
        assert_eq!(loc.get(&path).await.expect("get").as_ref(), b"hello");
        assert_eq!(loc.get_range(&path, 1..3).await.expect("range").as_ref(), b"el");
        assert_eq!(loc.size(&path).await.expect("size"), 5);
        assert_eq!(loc.list("a").await.expect("list").len(), 1);
        loc.delete(&path).await.expect("delete");
        loc.delete(&path).await.expect("deleting a missing object is fine");
        assert!(loc.get(&path).await.expect_err("gone").is_not_found());
        assert!(matches!(ObjectLocation::open("ftp://x"), Err(ObjectError::Location(_))));
        assert!(matches!(ObjectLocation::open("s3://"), Err(ObjectError::Location(_))));
    }
}
