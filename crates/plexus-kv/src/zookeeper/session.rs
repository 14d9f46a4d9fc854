//! The store's sessions and the bounds of every operation: connecting (with retries until the
//! store's timeout), reopening an expired session, TLS options, and how ZooKeeper's errors map
//! to [`KvError`].

use std::future::Future;
use std::time::Duration;

use zookeeper_client as zk;
use zookeeper_client::Client;

use super::{Inner, MAX_ATTEMPTS, REQUEST_OVERHEAD};
use crate::error::{KvError, Result};
use crate::TlsOptions;

pub(super) fn tls_options(url: &str, tls: &TlsOptions) -> Result<zk::TlsOptions> {
    // zookeeper-client builds its rustls config from the process-wide provider, and with both
    // of rustls's providers compiled in (etcd's and zookeeper-client's) rustls cannot choose
    // one: choose ring, unless the program installed one already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path).map_err(|e| KvError::Backend {
            url: url.to_string(),
            message: format!("cannot read the TLS {what} {}: {e}", path.display()),
        })
    };
    let mut options = zk::TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        let pem = read(ca, "CA file")?;
        options = options.with_pem_ca(&pem).map_err(|e| KvError::Backend {
            url: url.to_string(),
            message: format!("invalid TLS CA file {}: {e}", ca.display()),
        })?;
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let cert_pem = read(cert, "certificate")?;
            let key_pem = read(key, "key")?;
            options = options
                .with_pem_identity(&cert_pem, &key_pem)
                .map_err(|e| KvError::Backend {
                    url: url.to_string(),
                    message: format!(
                        "invalid TLS client identity {} / {}: {e}",
                        cert.display(),
                        key.display()
                    ),
                })?;
        }
        (None, None) => {}
        _ => {
            return Err(KvError::Backend {
                url: url.to_string(),
                message: "TLS needs both cert_file and key_file for a client certificate".into(),
            })
        }
    }
    if tls.server_name.is_some() {
        return Err(KvError::Backend {
            url: url.to_string(),
            message: "TLS server_name is not supported by the ZooKeeper client; name the server \
                      in the URL as its certificate does"
                .into(),
        });
    }
    Ok(options)
}

impl Inner {
    pub(super) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    pub(super) fn closed_err(&self) -> KvError {
        KvError::Closed {
            url: self.url.clone(),
        }
    }

    /// Runs one operation under the store's timeout.
    pub(super) async fn run<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        if self.is_closed() {
            return Err(self.closed_err());
        }
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(KvError::Timeout {
                url: self.url.clone(),
                op,
                after: self.timeout,
            }),
        }
    }

    pub(super) fn err(&self, op: &str, e: zk::Error) -> KvError {
        use zk::Error as E;
        match e {
            E::ClientClosed if self.is_closed() => self.closed_err(),
            E::ConnectionLoss
            | E::NoHosts
            | E::SessionExpired
            | E::Timeout
            | E::SessionMoved
            | E::ClientClosed
            | E::Throttled => KvError::Unavailable {
                url: self.url.clone(),
                reason: format!("{op}: {e}"),
            },
            E::Unimplemented if op.contains("TTL") => self.ttl_unsupported(),
            other => KvError::Backend {
                url: self.url.clone(),
                message: format!("{op}: {other}"),
            },
        }
    }

    fn ttl_unsupported(&self) -> KvError {
        KvError::Backend {
            url: self.url.clone(),
            message: "the ZooKeeper server refused a TTL znode: TTL keys need the server to run \
                      with -Dzookeeper.extendedTypesEnabled=true"
                .into(),
        }
    }

    pub(super) fn gave_up(&self, key: &str) -> KvError {
        KvError::Backend {
            url: self.url.clone(),
            message: format!("key {key:?} kept changing: gave up after {MAX_ATTEMPTS} attempts"),
        }
    }

    pub(super) fn max_value(&self) -> usize {
        self.max_buffer - REQUEST_OVERHEAD - 1
    }

    /// Opens a new session.
    pub(super) async fn new_session(&self, session_timeout: Duration) -> Result<Client> {
        let mut connector = Client::connector()
            .with_session_timeout(session_timeout)
            .with_fail_eagerly();
        if let Some((user, password)) = &self.credentials {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        if let Some(tls) = &self.tls {
            connector = connector.with_tls(tls.clone());
        }
        // Every host is tried once per attempt; attempts go on until the timeout, so that a
        // server still starting is waited for, and a dead one is reported with its error.
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let attempt = connector.clone();
            let result = if self.tls.is_some() {
                attempt.secure_connect(&self.connect).await
            } else {
                attempt.connect(&self.connect).await
            };
            match result {
                Ok(client) => return Ok(client),
                Err(e @ (zk::Error::NoHosts | zk::Error::ConnectionLoss | zk::Error::Timeout))
                    if tokio::time::Instant::now() + Duration::from_millis(200) < deadline =>
                {
                    tracing::debug!(url = %self.url, error = %e, "ZooKeeper connect failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(KvError::Unavailable {
                        url: self.url.clone(),
                        reason: format!("cannot open a ZooKeeper session at {}: {e}", self.connect),
                    })
                }
            }
        }
    }

    /// The store's session, opening a new one if it ended.
    pub(super) async fn client(&self) -> Result<Client> {
        if self.is_closed() {
            return Err(self.closed_err());
        }
        let mut guard = self.session.lock().await;
        if let Some(client) = guard.as_ref() {
            if !client.state().is_terminated() {
                return Ok(client.clone());
            }
            tracing::info!(url = %self.url, "ZooKeeper session ended; opening a new one");
        }
        let client = self.new_session(self.session_timeout).await?;
        if self.is_closed() {
            return Err(self.closed_err());
        }
        *guard = Some(client.clone());
        Ok(client)
    }
}
