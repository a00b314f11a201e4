//! Inbound TLS (rustls): the listener's certificate and key, reloaded when the files
//! change or on SIGHUP without touching open connections, and optional client
//! certificate authentication against a CA file.
//!
//! Why reload in place: certificates from cert-manager or ACME rotate every few weeks;
//! a restart would drop every client's connection and in-flight write.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// `[tls]`: inbound TLS of the client listener. Off while `cert_file` is unset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle; when set, clients must present a certificate it signed.
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked for changes; SIGHUP reloads at once.
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            reload_interval_ms: 10_000,
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("tls: {0}")]
    Config(String),
}

/// The acceptor's current configuration, swapped whole on reload.
pub struct ReloadingAcceptor {
    config: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    stamps: RwLock<Vec<Option<SystemTime>>>,
}

impl ReloadingAcceptor {
    /// Loads the files once; a bad certificate or key fails the start.
    pub fn new(config: &TlsConfig) -> Result<Arc<ReloadingAcceptor>, TlsError> {
        let server_config = load(config)?;
        Ok(Arc::new(ReloadingAcceptor {
            config: config.clone(),
            current: RwLock::new(Arc::new(server_config)),
            stamps: RwLock::new(stamps(config)),
        }))
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Reloads the files; on failure the previous certificate stays in use.
    pub fn reload(&self, why: &str) {
        match load(&self.config) {
            Ok(config) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(config);
                }
                if let Ok(mut known) = self.stamps.write() {
                    *known = stamps(&self.config);
                }
                tracing::info!(why, "tls certificate reloaded");
            }
            Err(error) => {
                tracing::error!(why, %error, "tls reload failed; keeping the previous certificate")
            }
        }
    }

    /// Watches the files and SIGHUP until the process ends.
    pub fn spawn_watcher(self: &Arc<Self>) {
        let this = self.clone();
        let interval = Duration::from_millis(self.config.reload_interval_ms.max(100));
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let signalled = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let signalled = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = signalled => this.reload("SIGHUP"),
                    () = tokio::time::sleep(interval) => {
                        let changed = this
                            .stamps
                            .read()
                            .map(|known| *known != stamps(&this.config))
                            .unwrap_or(false);
                        if changed {
                            this.reload("files changed");
                        }
                    }
                }
            }
        });
    }
}

fn stamps(config: &TlsConfig) -> Vec<Option<SystemTime>> {
    [&config.cert_file, &config.key_file, &config.client_ca_file]
        .into_iter()
        .map(|path| {
            path.as_ref()
                .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        })
        .collect()
}

fn file_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Reads a PEM certificate chain.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error("certificate file", path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("certificate file", path, e))?;
    if certs.is_empty() {
        return Err(file_error("certificate file", path, "no certificate in it"));
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The error names the file, never its content.
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error("key file", path, e))
}

/// Reads a PEM CA bundle into a root store.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| file_error("CA file", path, e))?;
    }
    Ok(roots)
}

/// The crypto provider every TLS configuration of the process uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(config: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Err(TlsError::Config(
            "cert_file and key_file must both be set".into(),
        ));
    };
    let certs = read_certs(cert_file)?;
    let key = read_key(key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &config.client_ca_file {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("certificate and key do not match: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}
