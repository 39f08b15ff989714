//! TLS, terminated by nginx with the shipped `deploy/nginx-tls.conf` and a throwaway CA: the
//! page over https talks `wss://`, plain http is redirected, and the command-line client
//! trusts a private CA with `--ca-file` and refuses a wrong one in one line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use web::session::lines;

use crate::deploy::{instances_and_bundle, shipped};
use crate::support::{header, http_raw, Browser, Engine, Nginx, Paths, Server};

const LIMIT: Duration = Duration::from_secs(30);

/// A throwaway CA, written as `NAME-ca.pem` in `dir`.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem_text: String,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem_text = params.self_signed(&key)?.pem();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, &pem_text)?;
        Ok(Self { params, key, pem_text, pem })
    }

    /// A certificate for 127.0.0.1 and localhost signed by this CA: the chain and key files,
    /// and the base64 SHA-256 of its public key (what Chromium's SPKI pin takes).
    fn issue(&self, dir: &Path) -> Result<(PathBuf, PathBuf, String)> {
        let key = KeyPair::generate()?;
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        let cert = params.signed_by(&key, &Issuer::from_params(&self.params, &self.key))?;
        let chain = dir.join("fullchain.pem");
        let private = dir.join("privkey.pem");
        std::fs::write(&chain, cert.pem() + &self.pem_text)?;
        std::fs::write(&private, key.serialize_pem())?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
        let spki = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        Ok((chain, private, spki))
    }
}

#[tokio::test]
async fn https_page_talks_wss_and_the_client_trusts_only_the_right_ca() -> Result<()> {
    let paths = Paths::get()?;
    let dir = paths.out.join("tls");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let ca = Ca::new(&dir, "right")?;
    let wrong = Ca::new(&dir, "wrong")?;
    let (chain, private, spki) = ca.issue(&dir)?;

    let server = Server::start(&paths).await?;
    let nginx = Nginx::start_http(&paths, "tls", 2, |addrs| {
        let mut replacements = instances_and_bundle(&paths.dist, server.addr, server.addr);
        replacements.extend([
            ("listen 80;", format!("listen {};", addrs[0])),
            ("listen [::]:80;", String::new()),
            ("listen 443 ssl;", format!("listen {} ssl;", addrs[1])),
            ("listen [::]:443 ssl;", String::new()),
            ("/etc/ssl/realtime/fullchain.pem", chain.display().to_string()),
            ("/etc/ssl/realtime/privkey.pem", private.display().to_string()),
        ]);
        shipped(&paths, "nginx-tls.conf", &replacements)
    })
    .await?;
    let (http, https) = (nginx.addrs[0], nginx.addrs[1]);

    // Plain HTTP is redirected to HTTPS.
    let (head, _) =
        http_raw(http, "GET /some/page HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
    assert!(head.starts_with("HTTP/1.1 301"), "{head}");
    assert_eq!(header(&head, "location"), Some("https://127.0.0.1/some/page"), "{head}");

    // The page over https, its socket over wss, in Chromium with the certificate pinned.
    let pin = format!("--ignore-certificate-errors-spki-list={spki}");
    let browser = Browser::start_custom(&paths, Engine::Chromium, &[pin]).await?;
    browser.client.goto(&format!("https://{https}/")).await?;
    let shown = browser.wait_for_lines(4, LIMIT).await?;
    assert_eq!(shown[2], lines::received(wire::WELCOME), "{shown:?}");
    assert_eq!(shown[3], lines::received(&wire::reply(wire::HELLO)));
    let protocol: String = browser.eval("return location.protocol;").await?;
    assert_eq!(protocol, "https:");
    browser.close().await?;

    // The command-line client over wss: trusts the CA it is given, and only that one.
    let url = format!("wss://{https}{}", wire::WS_PATH);
    let client = |ca: &Path| {
        std::process::Command::new(&paths.client_bin)
            .args(["--url", &url, "--ca-file"])
            .arg(ca)
            .arg("over tls")
            .output()
            .with_context(|| format!("run {}", paths.client_bin.display()))
    };
    let trusted = client(&ca.pem)?;
    let stdout = String::from_utf8_lossy(&trusted.stdout);
    ensure!(
        trusted.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert_eq!(stdout, format!("{}\nOVER TLS\n", wire::WELCOME));

    let refused = client(&wrong.pem)?;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    ensure!(stderr.starts_with("client: error: "), "{stderr}");
    ensure!(stderr.to_lowercase().contains("certificate"), "says why: {stderr}");
    assert!(refused.stdout.is_empty());
    Ok(())
}
