//! SVIDs from the SPIFFE Workload API (a SPIRE agent's socket), through the `spiffe`
//! crate's `X509Source`, which streams rotations and bundle updates. Each update is
//! converted once into [`SvidMaterial`], so handshakes only clone an `Arc`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::{X509BundleSet, X509Source, X509Svid};
use tokio::sync::watch;

use super::{SvidError, SvidMaterial, SvidSource};

/// How long startup waits for the agent's first answer. Long enough for a SPIRE agent
/// that starts beside us; short enough that a missing socket fails the start visibly.
const INITIAL_SYNC: Duration = Duration::from_secs(60);

/// How long the `X509Source` may take to close once we stop following it.
const SHUTDOWN: Duration = Duration::from_secs(5);

/// An SVID from the Workload API, following rotation. The following task ends, and the
/// connection to the agent closes, once the source and every receiver of its updates
/// are dropped.
#[derive(Debug)]
pub struct WorkloadApiSource {
    rx: watch::Receiver<Arc<SvidMaterial>>,
}

impl WorkloadApiSource {
    /// Connects to `endpoint` (`unix:///run/spire/agent.sock`, `tcp://127.0.0.1:8081`) and
    /// waits for the first SVID.
    pub async fn connect(endpoint: &str) -> Result<WorkloadApiSource, SvidError> {
        let source = X509Source::builder().endpoint(endpoint).initial_sync_timeout(INITIAL_SYNC).build().await?;
        let material = material_from_source(&source)?;
        let (tx, rx) = watch::channel(Arc::new(material));
        tokio::spawn(follow(source, tx));
        Ok(WorkloadApiSource { rx })
    }
}

impl SvidSource for WorkloadApiSource {
    fn current(&self) -> Arc<SvidMaterial> {
        self.rx.borrow().clone()
    }

    fn updates(&self) -> watch::Receiver<Arc<SvidMaterial>> {
        self.rx.clone()
    }
}

/// Converts the Workload API's view (the selected SVID and every trust domain's bundle).
pub(crate) fn material_from_x509(svid: &X509Svid, bundles: &X509BundleSet) -> Result<SvidMaterial, SvidError> {
    let chain = svid.cert_chain().iter().map(|c| CertificateDer::from(c.as_bytes().to_vec())).collect();
    // The Workload API hands out keys as PKCS#8 DER.
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.private_key().as_bytes().to_vec()));
    let bundles = bundles
        .iter()
        .map(|(domain, bundle)| {
            let certs = bundle.authorities().iter().map(|c| CertificateDer::from(c.as_bytes().to_vec())).collect();
            (domain.as_str().to_string(), certs)
        })
        .collect::<BTreeMap<_, _>>();
    SvidMaterial::from_der(chain, key, bundles)
}

fn material_from_source(source: &X509Source) -> Result<SvidMaterial, SvidError> {
    material_from_x509(&*source.svid()?, &*source.bundle_set()?)
}

async fn follow(source: X509Source, tx: watch::Sender<Arc<SvidMaterial>>) {
    let mut updates = source.updated();
    loop {
        tokio::select! {
            () = tx.closed() => break,
            changed = updates.changed() => match changed {
                Ok(_) => match material_from_source(&source) {
                    Ok(material) => {
                        tracing::info!(
                            spiffe_id = material.spiffe_id(),
                            serial = material.serial(),
                            not_after = %humantime::format_rfc3339_seconds(material.not_after()),
                            "SVID rotated by the Workload API"
                        );
                        tx.send_replace(Arc::new(material));
                    }
                    // Withdrawn or unusable material: peers will refuse ours once it
                    // expires, which is the agent's decision to make, not ours.
                    Err(error) => tracing::warn!(%error, "Workload API update not usable; keeping the last SVID"),
                },
                Err(error) => {
                    tracing::error!(%error, "Workload API source closed; the SVID will no longer rotate");
                    break;
                }
            }
        }
    }
    if let Err(error) = source.shutdown_with_timeout(SHUTDOWN).await {
        tracing::debug!(%error, "Workload API source did not close cleanly");
    }
}

#[cfg(test)]
mod tests {
    use spiffe::{TrustDomain, X509Bundle};

    use super::*;
    use crate::identity::svid::tests::TestCa;

    fn der(pem: &str) -> Vec<u8> {
        rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap().to_vec()
    }

    fn pkcs8(pem: &str) -> Vec<u8> {
        match rustls_pemfile::private_key(&mut pem.as_bytes()).unwrap().unwrap() {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            other => panic!("not PKCS#8: {other:?}"),
        }
    }

    // A SPIRE agent is not available in tests: this checks the conversion of what the
    // Workload API hands over, with federated bundles beside our own.
    #[test]
    fn converts_the_workload_api_view_with_federated_bundles() {
        let ours = TestCa::new();
        let theirs = TestCa::new();
        let (cert, key) = ours.svid("spiffe://inquest.local/agent");
        let svid = X509Svid::parse_from_der(&der(&cert), &pkcs8(&key)).unwrap();
        let mut bundles = X509BundleSet::new();
        for (domain, ca) in [("inquest.local", &ours), ("partner.test", &theirs)] {
            let td = TrustDomain::new(domain).unwrap();
            bundles.add_bundle(X509Bundle::from_x509_authorities(td, &[ca.cert.der().as_ref()]).unwrap());
        }
        let material = material_from_x509(&svid, &bundles).unwrap();
        assert_eq!(material.spiffe_id(), "spiffe://inquest.local/agent");
        assert_eq!(material.trust_domains().collect::<Vec<_>>(), ["inquest.local", "partner.test"]);
        assert_eq!(material.leaf().as_ref(), der(&cert).as_slice());

        let (peer, _) = theirs.svid("spiffe://partner.test/client");
        let id = material
            .verify_peer(
                &CertificateDer::from(der(&peer)),
                &[],
                rustls::pki_types::UnixTime::now(),
                webpki::KeyUsage::client_auth(),
            )
            .unwrap();
        assert_eq!(id, "spiffe://partner.test/client");

        let without_ours = X509BundleSet::new();
        let err = material_from_x509(&svid, &without_ours).unwrap_err();
        assert!(matches!(err, SvidError::NoOwnBundle(ref td) if td == "inquest.local"), "{err:?}");
    }
}
