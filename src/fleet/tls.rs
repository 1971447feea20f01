//! TLS for the broker connection (rustls with the ring provider): the clinic CA or the
//! system roots, optional client certificate.

use super::mqtt::FleetError;
use crate::config::FleetConfig;
use std::path::Path;
use std::sync::Arc;

pub(super) fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, FleetError> {
    crate::storage::read_small_file(path, crate::storage::MAX_CONFIG_FILE_BYTES).map_err(|source| {
        FleetError::Io {
            what,
            path: path.into(),
            source,
        }
    })
}

pub(super) fn tls_config(cfg: &FleetConfig) -> Result<rustls::ClientConfig, FleetError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |e: &dyn std::fmt::Display| FleetError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca_file {
        Some(ca) => {
            let pem = read("fleet.ca_file", ca)?;
            for c in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(c.map_err(|e| tls(&format!("{}: {e}", ca.display())))?)
                    .map_err(|e| tls(&format!("{}: {e}", ca.display())))?;
            }
            if roots.is_empty() {
                return Err(tls(&format!("{}: no certificate in it", ca.display())));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls(&e))?
    .with_root_certificates(roots);
    Ok(match (&cfg.client_cert, &cfg.client_key) {
        (Some(c), Some(k)) => {
            let pem = read("fleet.client_cert", c)?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls(&format!("{}: {e}", c.display())))?;
            let key = PrivateKeyDer::from_pem_slice(&read("fleet.client_key", k)?)
                .map_err(|e| tls(&format!("{}: {e}", k.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls(&e))?
        }
        _ => builder.with_no_client_auth(),
    })
}
