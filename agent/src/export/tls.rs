//! TLS for the sinks: the certificates a server must chain to (a sink's `ca_file`, else the
//! Mozilla roots built in), as rustls wants them for syslog and as ureq wants them for
//! ClickHouse. Verification is never turned off.

use std::{path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, pem::PemObject as _};

/// The certificates in a PEM file; an error names the file and says what is wrong.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let err = |what: String| format!("ca_file {}: {what}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// A rustls client config trusting `ca_file`'s certificates, or the built-in roots.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // ring, as ureq uses for ClickHouse (aws-lc-rs, which rustls now prefers for its
    // post-quantum key exchange, needs cmake and a C toolchain to build on every host).
    #[expect(
        deprecated,
        reason = "ring stays the provider (see above) while rustls moves its default to aws-lc-rs"
    )]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// ureq's TLS settings trusting `ca_file`'s certificates, or the built-in roots.
pub fn ureq_config(ca_file: Option<&Path>) -> Result<ureq::tls::TlsConfig, String> {
    let roots = match ca_file {
        Some(path) => {
            let certs = read_ca_file(path)?
                .into_iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect::<Vec<_>>();
            ureq::tls::RootCerts::from(certs)
        }
        None => ureq::tls::RootCerts::WebPki,
    };
    Ok(ureq::tls::TlsConfig::builder().root_certs(roots).build())
}
