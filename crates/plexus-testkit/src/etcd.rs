//! A real etcd server for tests (Debian's `etcd-server`, `/usr/bin/etcd`).
//!
//! [`EtcdServer::start`] runs a single-member cluster on free loopback ports (client, peer and
//! metrics/health) with a temporary data dir (on `/dev/shm` when it exists, so fsyncs are
//! cheap), waits until it is healthy, and kills it and removes the dir on drop. It can be
//! killed with SIGKILL and restarted on the same ports and data ([`kill9`](EtcdServer::kill9),
//! [`restart`](EtcdServer::restart)). [`EtcdBackend`] runs the conformance suite on one server
//! shared by the whole test binary, each backend under a key prefix of its own.
//!
//! The server runs with a 50 ms heartbeat and a 500 ms election timeout: a single member
//! elects itself at once, and etcd's minimum lease TTL (1.5 × the election timeout, rounded up
//! to whole seconds) is 1 s, so 1 s TTLs mean 1 s.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use plexus_kv::{OpenOptions, Store};

use crate::kv::KvBackend;
use crate::net::free_port;
use crate::process::ChildGuard;

/// Where Debian's package installs the server.
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// How long a start or restart may take before the harness gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS for the client port of a test server.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// PEM server certificate.
    pub cert_file: PathBuf,
    /// PEM server key.
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca_file: Option<PathBuf>,
}

/// A running etcd server, killed (and its data removed) on drop.
pub struct EtcdServer {
    child: Mutex<Option<ChildGuard>>,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    tls: Option<ServerTls>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdServer")
            .field("endpoint", &self.endpoint())
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn temp_dir() -> std::io::Result<tempfile::TempDir> {
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("plexus-etcd-");
        b
    };
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return Ok(dir);
        }
    }
    builder.tempdir()
}

impl EtcdServer {
    /// Starts a plain-TCP server; panics (with etcd's log) if it does not come up.
    pub fn start() -> EtcdServer {
        Self::try_start(None).unwrap_or_else(|e| panic!("cannot start etcd: {e}"))
    }

    /// Starts a server whose client port speaks TLS; panics if it does not come up.
    pub fn start_tls(tls: ServerTls) -> EtcdServer {
        Self::try_start(Some(tls)).unwrap_or_else(|e| panic!("cannot start etcd with TLS: {e}"))
    }

    /// Starts a server, or says why it could not.
    pub fn try_start(tls: Option<ServerTls>) -> std::io::Result<EtcdServer> {
        if !Path::new(ETCD_BIN).exists() {
            return Err(std::io::Error::other(format!(
                "{ETCD_BIN} is missing: apt-get install etcd-server"
            )));
        }
        let server = EtcdServer {
            child: Mutex::new(None),
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            tls,
            dir: temp_dir()?,
        };
        server.spawn()?;
        Ok(server)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn spawn(&self) -> std::io::Result<()> {
        let client_scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{client_scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(ETCD_BIN);
        cmd.arg("--name")
            .arg("plexus-test")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("plexus-test={peer}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--listen-metrics-urls")
            .arg(format!("http://127.0.0.1:{}", self.metrics_port))
            .arg("--heartbeat-interval")
            .arg("50")
            .arg("--election-timeout")
            .arg("500")
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr")
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file);
            if let Some(ca) = &tls.client_ca_file {
                cmd.arg("--client-cert-auth")
                    .arg("--trusted-ca-file")
                    .arg(ca);
            }
        }
        let mut guard = ChildGuard::spawn(cmd)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.healthy() {
                break;
            }
            if !guard.is_running() {
                return Err(std::io::Error::other(format!(
                    "etcd exited at start; its log:\n{}",
                    self.log_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "etcd not healthy after {START_TIMEOUT:?}; its log:\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(guard);
        Ok(())
    }

    /// Whether `/health` on the metrics port says the member has a leader and answers.
    fn healthy(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.metrics_port));
        let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if conn.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = conn.read_to_string(&mut response);
        response.contains("\"health\":\"true\"")
    }

    /// Kills the server with SIGKILL (no shutdown, as in a crash). Its data dir stays.
    pub fn kill9(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            child.kill();
        }
    }

    /// Starts the server again on the same ports and data dir, after [`kill9`](Self::kill9)
    /// (or kills it first); panics if it does not come back.
    pub fn restart(&self) {
        self.kill9();
        if let Err(e) = self.spawn() {
            panic!("cannot restart etcd: {e}");
        }
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .is_some_and(|c| c.is_running())
    }

    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// A store URL for this server with a key prefix: `etcd://127.0.0.1:PORT/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        format!("etcd://{}/{prefix}", self.endpoint())
    }

    /// The server's temporary directory (data and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The server shared by every [`EtcdBackend`] of this test binary, started on first use and
/// killed (its directory removed) when the process exits.
pub fn shared() -> &'static EtcdServer {
    static SHARED: OnceLock<EtcdServer> = OnceLock::new();
    extern "C" fn cleanup() {
        if let Some(server) = SHARED.get() {
            server.kill9();
            let _ = std::fs::remove_dir_all(server.dir.path());
        }
    }
    SHARED.get_or_init(|| {
        let server = EtcdServer::start();
        // SAFETY: registers a plain function with no arguments; it only kills the child and
        // removes its directory.
        unsafe {
            libc::atexit(cleanup);
        }
        server
    })
}

/// The etcd backend of the conformance suite: clients of the [`shared`] server under a key
/// prefix unique to this backend.
pub struct EtcdBackend {
    url: String,
}

impl EtcdBackend {
    /// A backend with a fresh key prefix on the shared server (started if needed).
    pub async fn new() -> EtcdBackend {
        let server = tokio::task::spawn_blocking(shared)
            .await
            .unwrap_or_else(|e| panic!("starting etcd: {e}"));
        EtcdBackend {
            url: server.url(&crate::unique("kv")),
        }
    }

    /// The URL of this backend's clients.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Options used by the harness's clients: short enough that a broken test fails fast.
pub fn test_options() -> OpenOptions {
    OpenOptions {
        timeout: Duration::from_secs(5),
        ..OpenOptions::default()
    }
}

#[async_trait]
impl KvBackend for EtcdBackend {
    async fn client(&self) -> Arc<dyn Store> {
        plexus_kv::open(&self.url, test_options())
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    fn ttl_slack(&self) -> Duration {
        // Leases are checked for expiry every 500 ms, and TTLs are whole seconds.
        Duration::from_millis(1500)
    }
}

/// A throw-away CA with a server and a client certificate signed by it, as PEM files in a
/// temporary directory (removed on drop). The server certificate names `localhost` and
/// `127.0.0.1`.
pub struct TestCerts {
    dir: tempfile::TempDir,
    /// The CA's certificate.
    pub ca_file: PathBuf,
    /// The server's certificate.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate (for mutual TLS).
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
}

impl TestCerts {
    /// Generates the CA and both certificates.
    pub fn generate() -> anyhow::Result<TestCerts> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let dir = temp_dir()?;
        let write = |name: &str, pem: String| -> anyhow::Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, pem)?;
            Ok(path)
        };
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "plexus test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_file = write("ca.pem", ca_cert.pem())?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |cn: &str, usage: ExtendedKeyUsagePurpose| -> anyhow::Result<(String, String)> {
            let key = KeyPair::generate()?;
            let mut params =
                CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_pem, server_key_pem) = leaf("etcd", ExtendedKeyUsagePurpose::ServerAuth)?;
        let (client_pem, client_key_pem) = leaf("plexus", ExtendedKeyUsagePurpose::ClientAuth)?;
        Ok(TestCerts {
            ca_file,
            server_cert: write("server.pem", server_pem)?,
            server_key: write("server-key.pem", server_key_pem)?,
            client_cert: write("client.pem", client_pem)?,
            client_key: write("client-key.pem", client_key_pem)?,
            dir,
        })
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
