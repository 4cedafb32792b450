//! The servers under test, all started at once in the lab's server namespace
//! on 198.18.0.1 (one port each) and pinned to one CPU: the gateway with and
//! without its XDP filter, and Debian's nginx; plus the certificates and the
//! origin they share.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use anyhow::Context;

use crate::{
    lab::{IFACE, Lab, SERVER_V4, run},
    load::{MtlsClient, fast_origin},
    nginx::NginxSite,
    pki::{Issued, TestCa, server_cert},
};

/// The hostname the legitimate clients ask for.
pub const HOST: &str = "lab.test";
/// Where the shared origin listens, inside the server namespace.
pub const ORIGIN: &str = "127.0.0.1:8080";

/// A server configuration under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// `gateway run` with the XDP filter attached to the lab's veth, refusing
    /// by reset (the default: the client fails at once), SYN cookies off
    /// (`syn_cookies = "off"` where the gateway has the key): the kernel makes
    /// a socket for every connection.
    GatewayXdp,
    /// The same process with `syn_cookies = "on"`: XDP answers SYNs with
    /// cookies and the kernel makes a socket only for hellos that pass
    /// (switched by rewriting its configuration).
    GatewayXdpCookies,
    /// The same process with `refuse = "drop"` (switched by rewriting its
    /// configuration file, which it follows).
    GatewayXdpDrop,
    /// The same gateway without `[xdp]`: old hellos are refused by BoringSSL.
    GatewayUserspace,
    /// Debian's nginx, `ssl_protocols TLSv1.2 TLSv1.3`, `ssl_verify_client on`.
    Nginx,
}

impl Server {
    /// Every configuration, in the order they run.
    pub const ALL: [Server; 5] = [
        Server::GatewayXdp,
        Server::GatewayXdpCookies,
        Server::GatewayXdpDrop,
        Server::GatewayUserspace,
        Server::Nginx,
    ];

    /// The configurations that are processes of their own (started once each).
    pub const PROCESSES: [Server; 3] =
        [Server::GatewayXdp, Server::GatewayUserspace, Server::Nginx];

    /// The process that serves this configuration.
    pub fn host(self) -> Server {
        match self {
            Server::GatewayXdpDrop | Server::GatewayXdpCookies => Server::GatewayXdp,
            s => s,
        }
    }

    /// Short name for tables, JSON keys and the plot's legend.
    pub fn key(self) -> &'static str {
        match self {
            Server::GatewayXdp => "gateway+xdp",
            Server::GatewayXdpDrop => "gateway+xdp-drop",
            Server::GatewayXdpCookies => "gateway+xdp-cookies",
            Server::GatewayUserspace => "gateway-no-xdp",
            Server::Nginx => "nginx",
        }
    }

    /// One line saying what runs and where a sub-minimum hello is refused.
    pub fn describe(self) -> &'static str {
        match self {
            Server::GatewayXdp => {
                "gateway, XDP filter on the veth: old hellos refused in the kernel (refuse = reset), \
                 SYN cookies off: the kernel makes a socket for each connection"
            }
            Server::GatewayXdpCookies => {
                "gateway, XDP filter on the veth, syn_cookies = on: SYNs answered in XDP, old \
                 hellos refused (reset) before the kernel makes a socket"
            }
            Server::GatewayXdpDrop => {
                "gateway, XDP filter on the veth: old hellos dropped in the kernel (refuse = drop)"
            }
            Server::GatewayUserspace => {
                "gateway, no XDP: old hellos refused by BoringSSL in userspace (terminator minimum 1.2)"
            }
            Server::Nginx => "Debian nginx, ssl_protocols TLSv1.2 TLSv1.3, ssl_verify_client on",
        }
    }

    /// The port it listens on at 198.18.0.1. All three run at once, so that
    /// their steps can alternate; the XDP program inspects port 443 only.
    pub fn port(self) -> u16 {
        match self {
            Server::GatewayXdp | Server::GatewayXdpDrop | Server::GatewayXdpCookies => 443,
            Server::GatewayUserspace => 8443,
            Server::Nginx => 9443,
        }
    }

    /// Where a gateway serves its metrics inside the server namespace.
    pub fn metrics(self) -> Option<&'static str> {
        match self {
            Server::GatewayXdp | Server::GatewayXdpDrop | Server::GatewayXdpCookies => {
                Some("127.0.0.1:9100")
            }
            Server::GatewayUserspace => Some("127.0.0.1:9101"),
            Server::Nginx => None,
        }
    }

    /// The lab's name for its process.
    pub fn process(self) -> &'static str {
        self.host().key()
    }
}

/// Certificates every server and the clients use (ECDSA P-256, one CA).
pub struct Fixtures {
    /// The server's certificate for [`HOST`].
    pub server: Issued,
    /// The CA client certificates chain to.
    pub ca: PathBuf,
    /// The legitimate client's certificate.
    pub client: Issued,
}

impl Fixtures {
    /// Makes them in `dir` with the `openssl` command.
    pub fn new(dir: &Path) -> Fixtures {
        let server = server_cert(dir, "server", &[HOST]);
        let corp = TestCa::new(dir, "corp");
        let client = corp.client("alice", None);
        Fixtures {
            server,
            ca: corp.cert,
            client,
        }
    }

    /// The legitimate client of `server`: TLS 1.3, full handshakes, this certificate.
    pub fn client(&self, server: Server) -> MtlsClient {
        MtlsClient {
            addr: SocketAddr::from(([198, 18, 0, 1], server.port())),
            host: HOST.into(),
            ca: self.server.cert.clone(),
            cert: self.client.cert.clone(),
            key: self.client.key.clone(),
        }
    }
}

/// The origin behind every server: [`fast_origin`] on a listener bound in the
/// server namespace, served by a one-thread runtime of this process (so it runs
/// on the generator's CPU). Stops when dropped.
pub struct Origin {
    _runtime: tokio::runtime::Runtime,
}

impl Origin {
    /// Binds [`ORIGIN`] in the lab's server namespace and starts serving.
    pub fn start(lab: &Lab) -> anyhow::Result<Origin> {
        let listener = lab
            .in_server_thread(|| std::net::TcpListener::bind(ORIGIN))?
            .with_context(|| format!("bind the origin on {ORIGIN} in the server namespace"))?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        runtime.spawn(fast_origin(listener));
        Ok(Origin { _runtime: runtime })
    }
}

/// Whether the gateway under test has `[xdp] syn_cookies`, as found by
/// [`start`] (false until then).
static SYN_COOKIES: OnceLock<bool> = OnceLock::new();

/// Whether the gateway binary has the `[xdp] syn_cookies` key (its name and
/// `syn_cookie_rate` are in the binary where its configuration reads them).
pub fn gateway_has_syn_cookies(gateway: &Path) -> bool {
    *SYN_COOKIES.get_or_init(|| {
        let needle = b"syn_cookie_rate";
        std::fs::read(gateway).is_ok_and(|bin| bin.windows(needle.len()).any(|w| w == needle))
    })
}

/// Whether the gateway under test has `[xdp] syn_cookies` (see
/// [`gateway_has_syn_cookies`]; false before it was asked).
pub fn syn_cookies_known() -> bool {
    SYN_COOKIES.get().copied().unwrap_or(false)
}

fn gateway_config(server: Server, fx: &Fixtures) -> String {
    let cookies = |on: &str| {
        if syn_cookies_known() {
            format!("syn_cookies = \"{on}\"\n")
        } else {
            String::new()
        }
    };
    let head = format!("[xdp]\ninterface = \"{IFACE}\"\nports = [443]\n");
    let xdp = match server {
        Server::GatewayXdp => format!("{head}{}\n", cookies("off")),
        Server::GatewayXdpCookies => format!("{head}{}\n", cookies("on")),
        Server::GatewayXdpDrop => format!("{head}refuse = \"drop\"\n{}\n", cookies("off")),
        _ => String::new(),
    };
    let (port, metrics) = (server.port(), server.metrics().unwrap_or_default());
    format!(
        "{xdp}[zone]\nmin_tls_version = \"1.2\"\n\n[metrics]\nlisten = \"{metrics}\"\n\n\
         [terminator]\nlisten = [\"{SERVER_V4}:{port}\"]\n\n\
         [[ca]]\nname = \"corp\"\ncertificate = \"{ca}\"\n\n\
         [[hostname]]\nname = \"{HOST}\"\ncertificate = \"{cert}\"\nkey = \"{key}\"\n\
         origin = \"http://{ORIGIN}\"\nmtls = true\ncas = [\"corp\"]\n\n\
         [[rule]]\nid = \"verified\"\n\
         expression = 'not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked'\n\
         action = \"block\"\n",
        ca = fx.ca.display(),
        cert = fx.server.cert.display(),
        key = fx.server.key.display(),
    )
}

/// Starts `server` in the lab pinned to `cpu` and waits until it serves;
/// returns a note on how it runs (the gateway's XDP attach line).
pub fn start(
    lab: &mut Lab,
    server: Server,
    fx: &Fixtures,
    gateway: &Path,
    cpu: usize,
) -> anyhow::Result<String> {
    let mut cmd = lab.in_server("taskset");
    cmd.args(["-c", &cpu.to_string()]);
    match server {
        Server::Nginx => {
            let dir = lab.dir.join("nginx");
            std::fs::create_dir_all(&dir)?;
            let site = NginxSite {
                dir: &dir,
                listen: format!("{SERVER_V4}:{}", server.port()).parse()?,
                name: HOST,
                cert: &fx.server.cert,
                key: &fx.server.key,
                client_ca: &fx.ca,
                origin: ORIGIN.parse()?,
            };
            cmd.arg("nginx");
            let cmd = site.write(cmd)?;
            lab.spawn(server.process(), cmd)?;
            let pid_file = dir.join("nginx.pid");
            lab.wait_for(server.process(), Duration::from_secs(20), |_| {
                pid_file.exists()
            })?;
            Ok(String::new())
        }
        _ => {
            gateway_has_syn_cookies(gateway);
            let config = config_path(lab, server);
            std::fs::write(&config, gateway_config(server, fx))?;
            cmd.arg(gateway).arg("run").arg("--config").arg(&config);
            lab.spawn(server.process(), cmd)?;
            lab.wait_for(server.process(), Duration::from_secs(20), |lab| {
                scrape(lab, server).is_ok()
            })?;
            let log = lab.log(server.process());
            Ok(log
                .lines()
                .find_map(|l| {
                    l.find("XDP filter attached")
                        .map(|i| l[i..].trim().to_string())
                })
                .unwrap_or_default())
        }
    }
}

fn config_path(lab: &Lab, server: Server) -> PathBuf {
    lab.dir.join(format!("{}.toml", server.process()))
}

/// Makes `server` the configuration its process serves: for the XDP modes, rewrites the gateway's configuration file if the mode differs and
/// waits until the gateway has reloaded it (at most 10 s). `current` is the
/// mode the XDP gateway serves now, updated.
pub fn select(
    lab: &Lab,
    server: Server,
    fx: &Fixtures,
    current: &mut Server,
) -> anyhow::Result<()> {
    if server.host() != Server::GatewayXdp || server == *current {
        return Ok(());
    }
    let reloads = |lab: &Lab| {
        lab.log(server.process())
            .matches("configuration reloaded")
            .count()
    };
    let before = reloads(lab);
    let path = config_path(lab, server);
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, gateway_config(server, fx))?;
    std::fs::rename(&tmp, &path)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reloads(lab) == before {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{} did not reload its configuration for {} within 10 s:\n{}",
            server.process(),
            server.key(),
            lab.log(server.process())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    *current = server;
    Ok(())
}

/// A gateway's metrics, scraped from inside the server namespace (empty for nginx).
pub fn scrape(lab: &Lab, server: Server) -> anyhow::Result<String> {
    let Some(addr) = server.metrics() else {
        return Ok(String::new());
    };
    let out = run(lab.in_server("curl").args([
        "-sf",
        "--max-time",
        "2",
        &format!("http://{addr}/metrics"),
    ]))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The server's processes now (nginx's master and workers; the gateway).
pub fn pids(lab: &Lab, server: Server) -> anyhow::Result<Vec<u32>> {
    let root = lab
        .pid(server.process())
        .with_context(|| format!("{} is not running", server.key()))?;
    Ok(super::cpu::process_tree(root))
}

/// Stops the server (SIGTERM; the gateway detaches its XDP program).
pub fn stop(lab: &mut Lab, server: Server) -> anyhow::Result<()> {
    lab.stop(server.process())?;
    Ok(())
}
