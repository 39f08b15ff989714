//! `wss://`: the rustls configuration (the ring provider; the system's roots plus `--ca-file`)
//! and one-line explanations of TLS failures.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// Why the `--ca-file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    // Not `source`: the message already carries it, and `{:#}` would print it twice.
    #[error("cannot read --ca-file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("--ca-file {} is not valid PEM: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("--ca-file {} holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)", path.display())]
    Empty { path: PathBuf },
    #[error("--ca-file {}: certificate {number} cannot be a trusted root: {reason}", path.display())]
    Root { path: PathBuf, number: usize, reason: String },
}

/// Why no TLS configuration could be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    CaFile(#[from] CaFileError),
    #[error("cannot set up TLS: {0}")]
    Rustls(rustls::Error),
}

/// The configuration for `wss://`: ring as the crypto provider (explicitly, so nothing depends
/// on a process-wide default), trusting the system's roots and the certificates in `ca_file`.
///
/// The system's roots come from `rustls-native-certs` (on Debian `/etc/ssl/certs`;
/// `SSL_CERT_FILE` and `SSL_CERT_DIR` override it). Ones it cannot read or parse are skipped:
/// a server they would have vouched for is then reported as not trusted, with the way out.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, SetupError> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = ca_file {
        for (index, certificate) in read_ca_file(path)?.into_iter().enumerate() {
            roots.add(certificate).map_err(|error| CaFileError::Root {
                path: path.to_owned(),
                number: index + 1,
                reason: match error {
                    rustls::Error::InvalidCertificate(CertificateError::BadEncoding) => {
                        "not a valid X.509 certificate".to_owned()
                    }
                    other => other.to_string(),
                },
            })?;
        }
    }
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SetupError::Rustls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The PEM certificates in `path`, in order; other PEM sections (keys) are skipped.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let bytes =
        std::fs::read(path).map_err(|error| CaFileError::Read { path: path.to_owned(), error })?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CaFileError::Pem { path: path.to_owned(), reason: explain_pem(&error) })?;
    if certificates.is_empty() {
        return Err(CaFileError::Empty { path: path.to_owned() });
    }
    Ok(certificates)
}

fn explain_pem(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a section has no -----END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a -----BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a section is not valid base64".to_owned(),
        other => other.to_string(),
    }
}

/// A one-line explanation of a failed `wss://` connection, when `error` comes from TLS;
/// `None` for everything else (refused, DNS, the WebSocket handshake), which tungstenite's own
/// message describes well.
pub fn explain_connect(error: &std::io::Error) -> Option<String> {
    if let Some(tls) = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        return Some(explain_rustls(tls));
    }
    // tokio-rustls reports a peer that hangs up mid-handshake as an unexpected end of file
    // (tungstenite reports the same during the HTTP upgrade as an incomplete handshake).
    (error.kind() == std::io::ErrorKind::UnexpectedEof).then(|| {
        "the server closed the connection during the TLS handshake (does it serve TLS on this \
         port? use ws:// if not)"
            .to_owned()
    })
}

fn explain_rustls(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the server's certificate is not trusted: no trusted root issued it (for a private \
             CA, pass its certificate with --ca-file)"
                .to_owned()
        }
        // What path building reports when a trusted root has the issuer's name but another
        // key: the certificate was not issued by it.
        rustls::Error::InvalidCertificate(
            CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. },
        ) => "the server's certificate is not trusted: its signature does not verify with the \
              trusted root named as its issuer (for a private CA, pass its certificate with \
              --ca-file)"
            .to_owned(),
        rustls::Error::InvalidCertificate(CertificateError::BadEncoding) => {
            "the server's certificate is not valid X.509".to_owned()
        }
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if matches!(other.0.downcast_ref(), Some(webpki::Error::CaUsedAsEndEntity)) =>
        {
            "the server's certificate is a CA certificate (CA:TRUE), which cannot identify a \
             server: serve a certificate with CA:FALSE, signed by the CA or self-signed"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            format!("the server's certificate was refused: {}", other.0)
        }
        rustls::Error::InvalidCertificate(other) => {
            format!("the server's certificate was refused: {other}")
        }
        rustls::Error::InvalidMessage(_) => {
            "the server's answer is not TLS (a plain ws:// server? use ws:// then)".to_owned()
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_builds_without_a_ca_file() {
        let config = client_config(None).expect("config");
        assert!(config.crypto_provider().cipher_suites.iter().any(|suite| suite.tls13().is_some()));
    }

    #[test]
    fn unknown_issuer_points_at_ca_file() {
        let line =
            explain_rustls(&rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        assert!(line.contains("not trusted") && line.contains("--ca-file"), "{line}");
    }

    #[test]
    fn other_errors_are_not_explained_as_tls() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(explain_connect(&refused), None);
    }
}
