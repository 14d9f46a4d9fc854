//! A real ZooKeeper server for tests (Debian's `zookeeper` 3.8, run from its jars).
//!
//! [`ZkServer::start`] runs a standalone server in the foreground (`ZooKeeperServerMain`) on a
//! free loopback port with a generated `zoo.cfg` and a temporary data dir (on `/dev/shm` when it
//! exists), waits until it answers `ruok`, and kills it and removes the dir on drop. It can be
//! killed with SIGKILL and restarted on the same port and data ([`kill9`](ZkServer::kill9),
//! [`restart`](ZkServer::restart)). [`ZkBackend`] runs the conformance suite on one server shared
//! by the whole test binary, each backend under a chroot of its own.
//!
//! The server runs with:
//! - `tickTime=200` (sessions expire within 200 ms of their timeout; the shortest session, and
//!   so the shortest lock TTL, is 400 ms) and `maxSessionTimeout=60000`;
//! - `-Dzookeeper.extendedTypesEnabled=true` (TTL znodes) and
//!   `-Dznode.container.checkIntervalMs=100` (TTL znodes go within ~100 ms of their TTL);
//! - `-Djute.maxbuffer=4 MiB` ([`MAX_BUFFER`]; the URLs say so with `?maxbuffer=`), so that
//!   1 MiB values fit;
//! - `-Dzookeeper.forceSync=no`, the admin server off, every four-letter word allowed, and a
//!   256 MiB heap.

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

/// Where Debian's packages install the jars.
pub const JAVA_DIR: &str = "/usr/share/java";

/// The server's `jute.maxbuffer`.
pub const MAX_BUFFER: usize = 4 << 20;

/// The jars the server needs, under [`JAVA_DIR`].
const JARS: &[&str] = &[
    "zookeeper.jar",
    "zookeeper-jute.jar",
    "slf4j-api.jar",
    "slf4j-simple.jar",
    "metrics-core.jar",
    "commons-cli.jar",
    "snappy-java.jar",
    "netty-handler.jar",
    "netty-common.jar",
    "netty-buffer.jar",
    "netty-transport.jar",
    "netty-codec.jar",
    "netty-resolver.jar",
    "netty-transport-native-epoll.jar",
    "netty-transport-native-unix-common.jar",
];

/// How long a start or restart may take before the harness gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS for a test server's secure client port (PEM files, e.g. from
/// [`TestCerts`](crate::etcd::TestCerts)).
#[derive(Debug, Clone)]
pub struct ZkTls {
    /// PEM server certificate.
    pub cert_file: PathBuf,
    /// PEM server key (PKCS#8).
    pub key_file: PathBuf,
    /// PEM CA the server trusts for client certificates.
    pub ca_file: PathBuf,
    /// Whether clients must present a certificate.
    pub need_client_auth: bool,
}

/// A running ZooKeeper server, killed (and its data removed) on drop.
pub struct ZkServer {
    child: Mutex<Option<ChildGuard>>,
    port: u16,
    secure_port: Option<u16>,
    dir: tempfile::TempDir,
    extra_config: String,
    extended_types: bool,
}

impl std::fmt::Debug for ZkServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkServer")
            .field("endpoint", &self.endpoint())
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn temp_dir() -> std::io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("plexus-zk-");
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return Ok(dir);
        }
    }
    builder.tempdir()
}

impl ZkServer {
    /// Starts a server; panics (with its log) if it does not come up.
    pub fn start() -> ZkServer {
        Self::try_start("", true).unwrap_or_else(|e| panic!("cannot start ZooKeeper: {e}"))
    }

    /// Starts a server with extra `zoo.cfg` lines, and TTL znodes enabled or not.
    pub fn try_start(extra_config: &str, extended_types: bool) -> std::io::Result<ZkServer> {
        let jar = Path::new(JAVA_DIR).join("zookeeper.jar");
        if !jar.exists() {
            return Err(std::io::Error::other(format!(
                "{} is missing: apt-get install zookeeper",
                jar.display()
            )));
        }
        let server = ZkServer {
            child: Mutex::new(None),
            port: free_port(),
            secure_port: None,
            dir: temp_dir()?,
            extra_config: extra_config.to_string(),
            extended_types,
        };
        std::fs::create_dir_all(server.data_dir())?;
        server.spawn()?;
        Ok(server)
    }

    /// Starts a server that also serves TLS on a second port ([`secure_endpoint`]), through
    /// Netty with PEM key and trust stores.
    ///
    /// [`secure_endpoint`]: Self::secure_endpoint
    pub fn try_start_tls(tls: &ZkTls) -> std::io::Result<ZkServer> {
        let dir = temp_dir()?;
        let keystore = dir.path().join("keystore.pem");
        let mut pem = std::fs::read_to_string(&tls.cert_file)?;
        pem.push('\n');
        pem.push_str(&std::fs::read_to_string(&tls.key_file)?);
        std::fs::write(&keystore, pem)?;
        let secure_port = free_port();
        let extra_config = format!(
            "secureClientPort={secure_port}\n\
             secureClientPortAddress=127.0.0.1\n\
             serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
             ssl.keyStore.location={}\n\
             ssl.keyStore.type=PEM\n\
             ssl.trustStore.location={}\n\
             ssl.trustStore.type=PEM\n\
             ssl.clientAuth={}\n",
            keystore.display(),
            tls.ca_file.display(),
            if tls.need_client_auth { "need" } else { "none" }
        );
        let server = ZkServer {
            child: Mutex::new(None),
            port: free_port(),
            secure_port: Some(secure_port),
            dir,
            extra_config,
            extended_types: true,
        };
        std::fs::create_dir_all(server.data_dir())?;
        server.spawn()?;
        Ok(server)
    }

    /// The TLS client endpoint of a server started with [`try_start_tls`](Self::try_start_tls).
    pub fn secure_endpoint(&self) -> Option<SocketAddr> {
        self.secure_port
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("zoo.cfg")
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn spawn(&self) -> std::io::Result<()> {
        let config = format!(
            "tickTime=200\n\
             dataDir={}\n\
             clientPort={}\n\
             clientPortAddress=127.0.0.1\n\
             maxSessionTimeout=60000\n\
             maxClientCnxns=0\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=*\n\
             {}\n",
            self.data_dir().display(),
            self.port,
            self.extra_config
        );
        std::fs::write(self.config_path(), config)?;
        let classpath = JARS
            .iter()
            .map(|j| format!("{JAVA_DIR}/{j}"))
            .collect::<Vec<_>>()
            .join(":");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new("java");
        cmd.arg("-Xmx256m")
            .arg("-XX:+UseSerialGC")
            .arg("-XX:TieredStopAtLevel=1")
            .arg(format!(
                "-Dzookeeper.extendedTypesEnabled={}",
                self.extended_types
            ))
            .arg(format!("-Djute.maxbuffer={MAX_BUFFER}"))
            .arg("-Dznode.container.checkIntervalMs=100")
            .arg("-Dzookeeper.forceSync=no")
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
            .arg("-cp")
            .arg(classpath)
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = ChildGuard::spawn(cmd)?;
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.four_letter("ruok").as_deref() == Some("imok") {
                return Ok(());
            }
            if !self.is_running() {
                return Err(std::io::Error::other(format!(
                    "ZooKeeper exited at start:\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        Err(std::io::Error::other(format!(
            "ZooKeeper did not answer within {START_TIMEOUT:?}:\n{}",
            self.log_tail()
        )))
    }

    /// Sends a four-letter word (`ruok`, `srvr`, `cons`, ...) and returns the answer.
    pub fn four_letter(&self, word: &str) -> Option<String> {
        let mut conn =
            TcpStream::connect_timeout(&self.endpoint(), Duration::from_millis(200)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        conn.write_all(word.as_bytes()).ok()?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// Kills the server with SIGKILL (no shutdown, as in a crash). Its data dir stays.
    pub fn kill9(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            child.kill();
        }
    }

    /// Starts the server again on the same port and data dir, after [`kill9`](Self::kill9)
    /// (or kills it first); panics if it does not come back.
    pub fn restart(&self) {
        self.kill9();
        if let Err(e) = self.spawn() {
            panic!("cannot restart ZooKeeper: {e}");
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
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A store URL for this server with a chroot:
    /// `zk://127.0.0.1:PORT/chroot?maxbuffer=4194304`.
    pub fn url(&self, chroot: &str) -> String {
        url_for(self.endpoint(), chroot)
    }

    /// The server's temporary directory (data, config and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A store URL for a ZooKeeper server (or a proxy in front of one) at `addr`, run like
/// [`ZkServer`] runs it.
pub fn url_for(addr: SocketAddr, chroot: &str) -> String {
    let chroot = chroot.trim_matches('/');
    format!("zk://{addr}/{chroot}?maxbuffer={MAX_BUFFER}")
}

/// The server shared by every [`ZkBackend`] of this test binary, started on first use and
/// killed (its directory removed) when the process exits.
pub fn shared() -> &'static ZkServer {
    static SHARED: OnceLock<ZkServer> = OnceLock::new();
    extern "C" fn cleanup() {
        if let Some(server) = SHARED.get() {
            server.kill9();
            let _ = std::fs::remove_dir_all(server.dir.path());
        }
    }
    SHARED.get_or_init(|| {
        let server = ZkServer::start();
        // SAFETY: registers a plain function with no arguments; it only kills the child and
        // removes its directory.
        unsafe {
            libc::atexit(cleanup);
        }
        server
    })
}

/// Options used by the harness's clients: short enough that a broken test fails fast.
pub fn test_options() -> OpenOptions {
    OpenOptions {
        timeout: Duration::from_secs(5),
        ..OpenOptions::default()
    }
}

/// The ZooKeeper backend of the conformance suite: clients of the [`shared`] server under a
/// chroot unique to this backend.
pub struct ZkBackend {
    url: String,
}

impl ZkBackend {
    /// A backend with a fresh chroot on the shared server (started if needed).
    pub async fn new() -> ZkBackend {
        let server = tokio::task::spawn_blocking(shared)
            .await
            .unwrap_or_else(|e| panic!("starting ZooKeeper: {e}"));
        ZkBackend {
            url: server.url(&crate::unique("kv")),
        }
    }

    /// The URL of this backend's clients.
    pub fn url(&self) -> &str {
        &self.url
    }
}

#[async_trait]
impl KvBackend for ZkBackend {
    async fn client(&self) -> Arc<dyn Store> {
        plexus_kv::open(&self.url, test_options())
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    /// Watches read after each notification: fast updates coalesce.
    fn watch_coalesces(&self) -> bool {
        true
    }

    fn ttl_slack(&self) -> Duration {
        // TTL znodes are reaped every 100 ms (checkIntervalMs), from the server's clock.
        Duration::from_millis(1000)
    }

    fn min_ttl(&self) -> Duration {
        Duration::from_secs(1)
    }
}
