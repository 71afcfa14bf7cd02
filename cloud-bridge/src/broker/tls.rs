//! Mutual TLS: the bridge's device CA, the certificates it issues, and the rustls
//! server configuration of the gate's TLS listener.
//!
//! On disk (`{data_dir}/ca/`): `ca.key` (PKCS#8 PEM, mode 0600, created once and never
//! overwritten) and `ca.pem` (the self-signed CA certificate). Device certificates carry
//! the device id as CN and as a DNS SAN and are issued at `device add`
//! (`client.pem`, `client.key` 0600, `ca.pem` in the device's directory). The embedded
//! broker's server certificate is issued afresh at every start (SANs `127.0.0.1`,
//! `localhost` and the configured names), so it never goes stale.
//!
//! All certificates are valid from 1970-01-01: a gateway without a real-time clock boots
//! at the epoch and must still accept the broker's certificate until NTP catches up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use outpost_protocol::topics::valid_device_id;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// CA key file inside the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// CA certificate file inside the CA directory (and in a device's directory).
pub const CA_CERT_FILE: &str = "ca.pem";
/// A device's certificate file.
pub const CLIENT_CERT_FILE: &str = "client.pem";
/// A device's private key file.
pub const CLIENT_KEY_FILE: &str = "client.key";

/// TLS errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A device certificate for an invalid id was requested.
    #[error("invalid device id {0:?} for a certificate")]
    BadId(String),
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate chain (the leaf; the CA is distributed separately).
    pub cert_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

/// The bridge's device CA.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn base_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.not_before = rcgen::date_time_ymd(1970, 1, 1);
    let mut serial = [0u8; 16];
    // A random serial: certificates issued with the same subject must still differ.
    let _ = SystemRandom::new().fill(&mut serial);
    serial[0] &= 0x7f; // positive INTEGER
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    p
}

fn ca_params() -> CertificateParams {
    let mut p = base_params();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Outpost");
    dn.push(DnType::CommonName, "Outpost device CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

impl Ca {
    /// The CA in `{data_dir}/ca/`, created on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, TlsError> {
        let dir = data_dir.join("ca");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        if !key_path.exists() {
            let key = KeyPair::generate()?;
            match crate::fsutil::write_secret_new(&key_path, key.serialize_pem().as_bytes()) {
                Ok(()) => tracing::info!(dir = %dir.display(), "created the device CA"),
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&key_path)(e)),
            }
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem)?;
        match std::fs::read_to_string(&cert_path) {
            Ok(pem) => {
                let der = pem_der(&pem).ok_or(rcgen::Error::CouldNotParseCertificate)?;
                let issuer = Issuer::from_ca_cert_pem(&pem, key)?;
                Ok(Self { issuer, pem, der })
            }
            // The key exists without its certificate (first start, or a crash between
            // the two writes): self-sign it. Same key and name, so anything issued
            // before still chains to it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let params = ca_params();
                let cert = params.self_signed(&key)?;
                crate::fsutil::write_atomic(&cert_path, cert.pem().as_bytes())
                    .map_err(io(&cert_path))?;
                Ok(Self {
                    pem: cert.pem(),
                    der: cert.der().clone(),
                    issuer: Issuer::new(params, key),
                })
            }
            Err(e) => Err(io(&cert_path)(e)),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    fn issue(&self, mut params: CertificateParams) -> Result<Issued, TlsError> {
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }

    /// A server certificate for the broker: SANs 127.0.0.1, localhost and `names` (IP
    /// addresses or DNS names).
    pub fn issue_server(&self, names: &[String]) -> Result<Issued, TlsError> {
        let mut all = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        all.extend(
            names
                .iter()
                .filter(|n| !all.contains(n))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let mut params = CertificateParams::new(all)?;
        let base = base_params();
        params.not_before = base.not_before;
        params.serial_number = base.serial_number;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Outpost broker");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate for device `id` (CN and DNS SAN = `id`).
    pub fn issue_device(&self, id: &str) -> Result<Issued, TlsError> {
        if !valid_device_id(id) {
            return Err(TlsError::BadId(id.into()));
        }
        let mut params = base_params();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, id);
        params.subject_alt_names = vec![SanType::DnsName(id.try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    /// Writes `client.pem`, `client.key` (0600) and `ca.pem` for device `id` into `out`.
    pub fn write_device_files(&self, id: &str, out: &Path) -> Result<(), TlsError> {
        let issued = self.issue_device(id)?;
        let key_path = out.join(CLIENT_KEY_FILE);
        // A re-provisioned device gets a new key; the old file must not survive.
        let _ = std::fs::remove_file(&key_path);
        crate::fsutil::write_secret_new(&key_path, issued.key_pem.as_bytes())
            .map_err(io(&key_path))?;
        let cert_path = out.join(CLIENT_CERT_FILE);
        std::fs::write(&cert_path, issued.cert_pem.as_bytes()).map_err(io(&cert_path))?;
        let ca_path = out.join(CA_CERT_FILE);
        std::fs::write(&ca_path, self.pem.as_bytes()).map_err(io(&ca_path))?;
        Ok(())
    }

    /// The TLS listener's configuration: a fresh server certificate for `names`, and a
    /// client certificate signed by this CA required from every client.
    pub fn server_config(&self, names: &[String]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let server = self.issue_server(names)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone())),
            )?;
        Ok(Arc::new(config))
    }
}

impl Issued {
    /// The certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }
}

fn pem_der(pem: &str) -> Option<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes()).next()?.ok()
}

/// The device identity a (verified) client certificate names: its single CN, if that is
/// a valid device id. Several CNs, none, or anything unparsable give `None`.
pub fn cert_identity(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut cns = cert.subject().iter_common_name();
    let cn = cns.next()?.as_str().ok()?;
    if cns.next().is_some() || !valid_device_id(cn) {
        return None;
    }
    Some(cn.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_persists_and_issues() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(dir.path().join("ca").join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600);
        }
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.pem(), again.pem());
        let dev = again.issue_device("gw-7").unwrap();
        assert_eq!(cert_identity(dev.cert_der()).as_deref(), Some("gw-7"));
        assert!(again.issue_device("a/b").is_err());
        assert!(ca.server_config(&["broker.example".into()]).is_ok());
        let out = dir.path().join("dev");
        std::fs::create_dir_all(&out).unwrap();
        ca.write_device_files("gw-7", &out).unwrap();
        ca.write_device_files("gw-7", &out).unwrap();
        for f in [CLIENT_CERT_FILE, CLIENT_KEY_FILE, CA_CERT_FILE] {
            assert!(out.join(f).exists(), "{f}");
        }
        // The server certificate has no device identity (its CN has a space).
        let s = ca.issue_server(&[]).unwrap();
        assert_eq!(cert_identity(s.cert_der()), None);
        assert_eq!(cert_identity(b"not a certificate"), None);
    }
}
