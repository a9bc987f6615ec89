//! SVIDs from PEM files on disk, as cert-manager, Istio, spiffe-helper or `inquest dev-ca`
//! write them, re-read every second.
//!
//! Writers replace the three files one after another, and not always atomically, so a
//! read can catch a half-written file, or a new certificate beside the old key. Such a
//! read fails validation and the last good material stays in use until a complete set
//! appears. Contents are compared rather than modification times: Kubernetes secret
//! volumes swap a symlink, and coarse timestamps can hide a quick second write.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{SvidError, SvidMaterial, SvidSource};

/// How often the files are read again.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The three files of one SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The CA certificates of the trust domain (PEM).
    pub bundle_file: PathBuf,
}

/// An SVID from files, reloaded when they change. The polling task ends once the source
/// and every receiver of its updates are dropped.
#[derive(Debug)]
pub struct FileSource {
    files: SvidFiles,
    rx: watch::Receiver<Arc<SvidMaterial>>,
}

impl FileSource {
    /// Loads the files (failing if they are not a valid SVID now) and follows them every
    /// [`POLL_INTERVAL`]. Must run inside a Tokio runtime.
    pub fn watch(files: SvidFiles) -> Result<FileSource, SvidError> {
        FileSource::watch_every(files, POLL_INTERVAL)
    }

    /// As [`FileSource::watch`], polling every `interval`.
    pub fn watch_every(files: SvidFiles, interval: Duration) -> Result<FileSource, SvidError> {
        let snapshot = Snapshot::read_blocking(&files)?;
        let material = snapshot.parse()?;
        let (tx, rx) = watch::channel(Arc::new(material));
        tokio::spawn(follow(files.clone(), snapshot, tx, interval));
        Ok(FileSource { files, rx })
    }

    pub fn files(&self) -> &SvidFiles {
        &self.files
    }
}

impl SvidSource for FileSource {
    fn current(&self) -> Arc<SvidMaterial> {
        self.rx.borrow().clone()
    }

    fn updates(&self) -> watch::Receiver<Arc<SvidMaterial>> {
        self.rx.clone()
    }
}

/// The bytes of the three files at one reading.
#[derive(PartialEq, Eq)]
struct Snapshot {
    cert: Vec<u8>,
    key: Vec<u8>,
    bundle: Vec<u8>,
}

impl Snapshot {
    fn read_blocking(files: &SvidFiles) -> Result<Snapshot, SvidError> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|source| SvidError::Read { path: p.display().to_string(), source });
        Ok(Snapshot { cert: read(&files.cert_file)?, key: read(&files.key_file)?, bundle: read(&files.bundle_file)? })
    }

    async fn read(files: &SvidFiles) -> Result<Snapshot, SvidError> {
        async fn read(p: &Path) -> Result<Vec<u8>, SvidError> {
            tokio::fs::read(p).await.map_err(|source| SvidError::Read { path: p.display().to_string(), source })
        }
        Ok(Snapshot {
            cert: read(&files.cert_file).await?,
            key: read(&files.key_file).await?,
            bundle: read(&files.bundle_file).await?,
        })
    }

    fn parse(&self) -> Result<SvidMaterial, SvidError> {
        SvidMaterial::from_pem(&self.cert, &self.key, &self.bundle)
    }
}

async fn follow(files: SvidFiles, mut seen: Snapshot, tx: watch::Sender<Arc<SvidMaterial>>, interval: Duration) {
    let cert_file = files.cert_file.display().to_string();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    // The last problem reported, so that a file missing for an hour is one warning.
    let mut reported: Option<String> = None;
    loop {
        tokio::select! {
            () = tx.closed() => return,
            _ = ticker.tick() => {}
        }
        let outcome = match Snapshot::read(&files).await {
            Ok(snapshot) if snapshot == seen => continue,
            Ok(snapshot) => {
                let parsed = snapshot.parse();
                // The same bytes would fail the same way: wait for them to change.
                seen = snapshot;
                parsed
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(material) => {
                tracing::info!(
                    cert_file,
                    spiffe_id = material.spiffe_id(),
                    serial = material.serial(),
                    not_after = %humantime::format_rfc3339_seconds(material.not_after()),
                    "SVID reloaded from files"
                );
                tx.send_replace(Arc::new(material));
                reported = None;
            }
            Err(error) => {
                let message = error.to_string();
                if reported.as_ref() != Some(&message) {
                    tracing::warn!(cert_file, %error, "SVID files not usable (yet); keeping the last good SVID");
                    reported = Some(message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::svid::tests::TestCa;

    fn write(files: &SvidFiles, cert: &str, key: &str, bundle: &str) {
        std::fs::write(&files.cert_file, cert).unwrap();
        std::fs::write(&files.key_file, key).unwrap();
        std::fs::write(&files.bundle_file, bundle).unwrap();
    }

    #[tokio::test]
    async fn follows_rewrites_and_keeps_the_last_good_svid_through_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let files = SvidFiles {
            cert_file: dir.path().join("tls.crt"),
            key_file: dir.path().join("tls.key"),
            bundle_file: dir.path().join("ca.crt"),
        };
        let ca = TestCa::new();
        let bundle = ca.cert.pem();
        let (cert, key) = ca.svid("spiffe://inquest.local/agent");
        write(&files, &cert, &key, &bundle);
        let source = FileSource::watch_every(files.clone(), Duration::from_millis(20)).unwrap();
        let first = source.current();
        let mut updates = source.updates();

        // Half-written certificate, then a new certificate beside the old key, then a
        // missing key: none of them is published.
        std::fs::write(&files.cert_file, &cert[..cert.len() / 2]).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (new_cert, new_key) = ca.svid("spiffe://inquest.local/agent");
        std::fs::write(&files.cert_file, &new_cert).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::remove_file(&files.key_file).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(source.current().serial(), first.serial());
        assert!(!updates.has_changed().unwrap());

        std::fs::write(&files.key_file, &new_key).unwrap();
        tokio::time::timeout(Duration::from_secs(5), updates.changed()).await.unwrap().unwrap();
        let second = source.current();
        assert_ne!(second.serial(), first.serial());
        assert_eq!(second.spiffe_id(), "spiffe://inquest.local/agent");
    }

    #[test]
    fn refuses_to_start_from_files_that_are_not_an_svid() {
        let dir = tempfile::tempdir().unwrap();
        let files = SvidFiles {
            cert_file: dir.path().join("missing.pem"),
            key_file: dir.path().join("missing-key.pem"),
            bundle_file: dir.path().join("bundle.pem"),
        };
        let err = FileSource::watch(files).unwrap_err();
        assert!(matches!(err, SvidError::Read { .. }), "{err:?}");
    }
}
