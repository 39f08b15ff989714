//! `wss://`: the rustls configuration (the ring provider; the system's roots plus `--ca-file`,
//! whose certificates are also pinned) and one-line explanations of TLS failures.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

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
/// on a process-wide default), trusting the system's roots and the certificates in `ca_file`,
/// which are also pinned ([`Pinned`]).
///
/// The system's roots come from `rustls-native-certs` (on Debian `/etc/ssl/certs`;
/// `SSL_CERT_FILE` and `SSL_CERT_DIR` override it). Ones it cannot read or parse are skipped:
/// a server they would have vouched for is then reported as not trusted, with the way out.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, SetupError> {
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
    if let Some(path) = ca_file {
        for (index, certificate) in read_ca_file(path)?.into_iter().enumerate() {
            roots.add(certificate.clone()).map_err(|error| CaFileError::Root {
                path: path.to_owned(),
                number: index + 1,
                reason: match error {
                    rustls::Error::InvalidCertificate(CertificateError::BadEncoding) => {
                        "not a valid X.509 certificate".to_owned()
                    }
                    other => other.to_string(),
                },
            })?;
            pinned.push(certificate);
        }
    }
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(SetupError::Rustls)?;
    if pinned.is_empty() {
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    // Not empty: the --ca-file's certificates are among the roots.
    let chains = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|error| SetupError::Rustls(rustls::Error::General(error.to_string())))?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { certificates: pinned, chains }))
        .with_no_client_auth())
}

/// Verification with `--ca-file`: a server that presents, as its own certificate, one that is
/// byte for byte in `--ca-file` is accepted as pinned, whether or not that certificate says
/// `CA:TRUE` (what `openssl req -x509` makes by default, and what rustls's path building
/// refuses as a server's certificate). Everything else goes through rustls's usual verification
/// against the system's roots and the `--ca-file` ones, exactly as without pinning.
///
/// A pinned certificate must still be valid now (its notBefore and notAfter) and name the host
/// of the URL in its subjectAltName (the common name is ignored, as browsers and rustls do), and
/// the server must prove it holds its key (the TLS handshake's signature, checked as always).
/// Checking the name is a decision: curl accepts a self-signed certificate given as `--cacert`
/// only when the name matches too, and a pin that ignored the name would let a certificate
/// trusted for one host be presented by another. Nothing else about it matters (its CA flag,
/// key usages, issuer): its exact bytes are what the user chose to trust.
#[derive(Debug)]
struct Pinned {
    certificates: Vec<CertificateDer<'static>>,
    chains: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.certificates.iter().any(|pin| pin.as_ref() == end_entity.as_ref()) {
            return self.chains.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        }
        let (not_before, not_after) = validity(end_entity)
            .ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if now.as_secs() < not_before {
            let not_before = UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_before));
            let error = CertificateError::NotValidYetContext { time: now, not_before };
            return Err(rustls::Error::InvalidCertificate(error));
        }
        if now.as_secs() > not_after {
            let not_after = UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_after));
            let error = CertificateError::ExpiredContext { time: now, not_after };
            return Err(rustls::Error::InvalidCertificate(error));
        }
        rustls::client::verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chains.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chains.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chains.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.chains.root_hint_subjects()
    }
}

/// A certificate's validity period, notBefore and notAfter in seconds since 1970 (times before
/// then count as 0), read from its DER: `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
/// [0] version OPTIONAL, serialNumber, signature, issuer, validity SEQUENCE { notBefore,
/// notAfter }, ... } ... }` (RFC 5280 §4.1). `None` if it is not shaped so.
fn validity(der: &[u8]) -> Option<(u64, u64)> {
    let (certificate, _) = der_element(der, 0x30)?;
    let (mut tbs, _) = der_element(certificate, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs, 0xa0)?.1;
    }
    let after_serial = der_element(tbs, 0x02)?.1;
    let after_signature = der_element(after_serial, 0x30)?.1;
    let after_issuer = der_element(after_signature, 0x30)?.1;
    let (validity, _) = der_element(after_issuer, 0x30)?;
    let (not_before, rest) = der_time(validity)?;
    let (not_after, _) = der_time(rest)?;
    Some((not_before, not_after))
}

/// The contents of the DER element at the start of `input`, which must have `tag`, and what
/// follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&length, mut rest) = rest.split_first()?;
    let length = if length < 0x80 {
        usize::from(length)
    } else {
        let count = usize::from(length & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    (rest.len() >= length).then(|| rest.split_at(length))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) at the start of
/// `input`, as seconds since 1970, and what follows it.
fn der_time(input: &[u8]) -> Option<(u64, &[u8])> {
    let (text, rest, century) = match input.first()? {
        0x17 => {
            let (text, rest) = der_element(input, 0x17)?;
            (text, rest, None)
        }
        0x18 => {
            let (text, rest) = der_element(input, 0x18)?;
            (text, rest, Some(()))
        }
        _ => return None,
    };
    let digits = text.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        digits.get(range)?.iter().try_fold(0i64, |n, &d| Some(n * 10 + i64::from(d - b'0')))
    };
    let (year, at) = match century {
        Some(()) if digits.len() == 14 => (number(0..4)?, 4),
        None if digits.len() == 12 => {
            let yy = number(0..2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        _ => return None,
    };
    let [month, day, hour, minute, second] =
        [0, 2, 4, 6, 8].map(|offset| number(at + offset..at + offset + 2));
    let (month, day) = (month?, day?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour? * 3600 + minute? * 60 + second?;
    Some((u64::try_from(seconds).unwrap_or(0), rest))
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
            "the server's certificate is not trusted: it is a CA certificate (CA:TRUE), which \
             identifies a server only when pinned: pass this very certificate with --ca-file, or \
             serve one with CA:FALSE signed by a CA"
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
    fn validity_is_read_from_utc_and_generalized_times() {
        // The epoch, 2049 as UTCTime, 2050 as GeneralizedTime (RFC 5280 §4.1.2.5).
        assert_eq!(der_time(b"\x17\x0d700101000000Z"), Some((0, &b""[..])));
        assert_eq!(der_time(b"\x17\x0d491231235959Zrest"), Some((2_524_607_999, &b"rest"[..])));
        assert_eq!(der_time(b"\x18\x0f20500101000000Z"), Some((2_524_608_000, &b""[..])));
        assert_eq!(der_time(b"\x17\x0d000229120000Z"), Some((951_825_600, &b""[..])));
        for bad in [&b"\x17\x0c70010100000Z"[..], b"\x17\x0d701301000000Z", b"\x04\x01Z", b""] {
            assert_eq!(der_time(bad), None, "{bad:?}");
        }
        assert_eq!(validity(b"\x30\x03\x30\x01\x00"), None);
    }

    #[test]
    fn other_errors_are_not_explained_as_tls() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(explain_connect(&refused), None);
    }
}
