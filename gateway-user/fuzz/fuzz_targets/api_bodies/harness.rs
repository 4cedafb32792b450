//! The process-wide setup of `api_bodies`: a store-mode control plane in a
//! temporary data directory (its terminator snapshot in force, no XDP filter),
//! the real admin API on a loopback listener and an HTTP/1.1 client for it, a
//! baseline state every input starts from (with a scoped API token), and the
//! placeholders bodies use.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use gateway::{
    admin,
    compiled::Compiled,
    config::Config,
    control::{
        self, ControlError, ControlPlane,
        expiry::Expiry,
        model::{AuthorityKind, State},
    },
    layers::Layers,
};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

/// A file of `fixtures/api_bodies`.
macro_rules! fixture {
    ($f:literal) => {
        include_str!(concat!("../../fixtures/api_bodies/", $f))
    };
}

/// Certificates, keys, CSRs and a CRL (of `@CA@`) made with `openssl`.
#[rustfmt::skip]
const FIXTURES: [(&str, &str); 10] = [
    ("@CA@", fixture!("ca.pem")), ("@CA2@", fixture!("ca2.pem")), ("@LEAF@", fixture!("leaf.pem")),
    ("@CERT@", fixture!("server.pem")), ("@KEY@", fixture!("server.key")),
    ("@KEY2@", fixture!("other.key")), ("@CSR@", fixture!("csr.pem")),
    ("@WEAKCSR@", fixture!("weak.csr")), ("@NOCNCSR@", fixture!("nocn.csr")),
    ("@CRLPEM@", fixture!("crl.pem")),
];

/// The rules' entry point.
const ENTRY: &str = "rulesets/phases/http_request_firewall_custom/entrypoint";

/// What every input starts from (after the first run's zone, CAs and
/// `localhost`): `METHOD path body` lines.
const BASELINE: &str = r#"POST zones/{Z}/custom_hostnames {"hostname":"fuzz.example.com","wildcard":true}
POST zones/{Z}/custom_hostnames {"hostname":"api.example.com","mtls":{"enabled":true}}
PATCH zones/{Z}/custom_hostnames/{H} {"custom_origin_server":"http://127.0.0.1:9"}
POST accounts/{A}/mtls_certificates {"ca":true,"certificates":"@CA@","crl_source":"@CRL@"}
PUT zones/{Z}/certificate_authorities/hostname_associations {"hostnames":
    ["fuzz.example.com"],"mtls_certificate_id":"@CAID@"}
POST zones/{Z}/client_certificates {"csr":"@CSR@","validity_days":30}
POST zones/{Z}/{E}/rules {"expression":"http.host eq \"a.test\"","action":"block"}
POST zones/{Z}/{E}/rules {"expression":"not cf.tls_client_auth.cert_verified","action":"log"}
POST user/tokens {"name":"fuzz scoped","policies":[{"effect":"allow","permission_groups":[
    {"name":"SSL and Certificates Read"},{"name":"Firewall Services Write"},
    {"name":"API Tokens Write"}]}]}"#;

/// Who a call is made as.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Caller {
    /// The first-run admin token (every permission).
    Admin,
    /// The baseline's scoped token (SSL and Certificates Read, Firewall
    /// Services Write, API Tokens Write).
    Scoped,
    /// No token, or one that is not valid.
    Nobody,
}


/// The process's control plane and its client.
pub struct Harness {
    rt: tokio::runtime::Runtime,
    plane: Arc<ControlPlane>,
    addr: SocketAddr,
    token: String,
    /// The scoped token: its id and secret.
    pub scoped: (String, String),
    /// The ruleset's id (`{S}`).
    ruleset_id: String,
    /// The temporary directory (data directory, CRL files).
    pub root: PathBuf,
    /// Placeholder → text.
    subst: Vec<(String, String)>,
    /// The state every input starts from.
    baseline: State,
}

/// The harness, made on first use.
pub fn get() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(setup)
}

fn setup() -> Harness {
    let tmp = std::env::temp_dir();
    // The directories of earlier runs whose process is gone.
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("gateway-fuzz-api-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let root = tmp.join(format!("gateway-fuzz-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("crl.pem"), FIXTURES[9].1).unwrap();
    std::fs::write(root.join("garbage.crl"), "not a CRL").unwrap();
    let opened = control::open(&root.join("data"), "localhost").expect("a new store");
    let token = opened.new_token.clone().expect("a first run makes a token");
    let mut base = Config::default();
    base.terminator.listen = vec!["127.0.0.1:8443".parse().unwrap()];
    base.xdp.ports = vec![8443];
    let config = opened.state.to_config(&base);
    let compiled = Compiled::build(&config, true).expect("the first state builds");
    let snapshot = compiled.tls.clone().expect("with a terminator");
    let layers = Layers::new(None, Some(Arc::new(ArcSwap::new(snapshot))), compiled);
    let expiry = Expiry::new(&prometheus::Registry::new()).unwrap();
    let layers = Arc::new(Mutex::new(layers));
    let plane = Arc::new(ControlPlane::start(opened, base, layers, expiry));
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    let rt = rt.worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let forever = std::future::pending();
    let admin = admin::api::Admin {
        plane: plane.clone(),
        history: gateway::metrics::history::History::new(prometheus::Registry::new()),
    };
    rt.spawn(admin::api::serve(listener, admin, None, forever));
    let file = |f: &str| root.join(f).display().to_string();
    let mut subst: Vec<(String, String)> = FIXTURES.map(|(k, v)| (k.into(), v.into())).into();
    subst.push(("@CRL@".into(), file("crl.pem")));
    subst.push(("@BADCRL@".into(), file("garbage.crl")));
    subst.push(("@NOFILE@".into(), file("missing.crl")));
    let baseline = rt.block_on(plane.read(State::clone));
    let mut h = Harness {
        rt,
        plane,
        addr,
        token,
        scoped: (String::new(), String::new()),
        ruleset_id: String::new(),
        root,
        subst,
        baseline,
    };
    for call in BASELINE.replace("\n    ", "").lines() {
        let (method, rest) = call.split_once(' ').unwrap();
        let (path, body) = rest.split_once(' ').unwrap();
        let body = h.expand(body.as_bytes(), true);
        let path = h.path(path, 0);
        let (status, answer) = h.call(method.parse().unwrap(), &path, &body, Caller::Admin);
        assert_eq!(status, StatusCode::OK, "baseline {call}: {answer}");
        let id = answer["result"]["id"].as_str().unwrap_or_default().to_string();
        if path.ends_with("mtls_certificates") {
            h.subst.push(("@CAID@".into(), id));
        } else if path.ends_with("user/tokens") {
            let secret = answer["result"]["value"].as_str().unwrap();
            h.scoped = (id.clone(), secret.into());
            h.subst.push(("@TOKEN@".into(), id));
        }
    }
    let (_, rulesets) = h.call(Method::GET, &h.path("zones/{Z}/rulesets", 0), b"", Caller::Admin);
    h.ruleset_id = rulesets["result"][0]["id"].as_str().unwrap().into();
    h.subst.push(("@RULESET@".into(), h.ruleset_id.clone()));
    let s = h.state();
    let ca = |k| s.cas.values().find(|c| c.kind == k).unwrap().id.clone();
    let (managed, server) = (ca(AuthorityKind::Managed), ca(AuthorityKind::Server));
    h.subst.push(("@MANAGED@".into(), managed));
    h.subst.push(("@SERVERCA@".into(), server));
    h.subst.push(("@RULE@".into(), s.rules[0].id.clone()));
    h.subst.push(("@RULE2@".into(), s.rules[1].id.clone()));
    h.baseline = s;
    h
}

impl Harness {
    /// The committed state.
    pub fn state(&self) -> State {
        self.rt.block_on(self.plane.read(State::clone))
    }

    /// The SHA-256 of the scoped token's secret, as the baseline keeps it.
    pub fn baseline_scoped_hash(&self) -> String {
        let token = self.baseline.tokens.get(&self.scoped.0);
        token.map(|t| t.secret_sha256.clone()).unwrap_or_default()
    }

    /// Puts the baseline back (one commit, when anything changed).
    pub fn reset(&self) {
        let reset = self.plane.change(|s| {
            *s = self.baseline.clone();
            Ok::<_, ControlError>(())
        });
        if let Err(e) = self.rt.block_on(reset) {
            panic!("the baseline could not be restored: {e}");
        }
    }

    /// Replaces the placeholders in `body`, their text JSON-escaped (`escape`,
    /// for raw JSON bodies) or as it is (for strings of a JSON value).
    pub fn expand(&self, body: &[u8], escape: bool) -> Vec<u8> {
        let mut out = body.to_vec();
        for (k, v) in self.subst.iter().filter(|_| body.contains(&b'@')) {
            let quoted = Value::String(v.clone()).to_string();
            let v = [v, &quoted[1..quoted.len() - 1]][usize::from(escape)];
            let (mut next, mut rest) = (Vec::new(), &out[..]);
            while let Some((&first, tail)) = rest.split_first() {
                match rest.strip_prefix(k.as_bytes()) {
                    Some(after) => (next.extend_from_slice(v.as_bytes()), rest = after),
                    None => (next.push(first), rest = tail),
                };
            }
            out = next;
        }
        out
    }

    /// A route template with its ids: `{Z}` zone, `{A}` account, `{E}` the
    /// rules' entry point, and the `pick`-th (or a missing) hostname `{H}` (by
    /// name), client certificate `{C}` (by common name), rule `{R}` (in order),
    /// uploaded CA `{U}` (by name), API token `{T}` (by name, `first-run`
    /// among them), ruleset `{S}` or kept ruleset version `{V}` (newest first).
    pub fn path(&self, template: &str, pick: u8) -> String {
        let s = self.state();
        let mut path = template.replace("{Z}", &s.meta.zone_id);
        path = path.replace("{A}", &s.meta.account_id);
        path = path.replace("{E}", ENTRY);
        let ids = |token: &str| -> Vec<(String, String)> {
            let pair = |name: &str, id: &str| (name.to_string(), id.to_string());
            match token {
                "{H}" => s.hostnames.values().map(|h| pair(&h.name, &h.id)).collect(),
                "{C}" => s.certs.values().map(|c| pair(&c.common_name, &c.id)).collect(),
                "{R}" => s.rules.iter().map(|r| pair(&r.id, &r.id)).collect(),
                "{T}" => s.tokens.values().map(|t| pair(&t.name, &t.id)).chain([pair("", "first-run")]).collect(),
                "{S}" => vec![pair("", &self.ruleset_id)],
                "{V}" => s.ruleset.history.iter().rev().map(|v| pair("", &v.version.to_string())).collect(),
                _ => s
                    .cas
                    .values()
                    .filter(|c| c.kind == AuthorityKind::Uploaded)
                    .map(|c| pair(&c.name, &c.id))
                    .collect(),
            }
        };
        for token in ["{H}", "{C}", "{R}", "{U}", "{T}", "{S}", "{V}"]
            .into_iter()
            .filter(|t| template.contains(t))
        {
            let mut ids = ids(token);
            if !matches!(token, "{R}" | "{V}") {
                ids.sort();
            }
            let id = match ids.get(pick as usize % (ids.len() + 1)) {
                Some((_, id)) => id.clone(),
                None => format!("{pick:032x}"),
            };
            path = path.replace(token, &id);
        }
        path
    }

    /// One API call on a new connection, as `caller` (`Nobody`: with no token,
    /// or a wrong one): the status and the answer, checked to be JSON.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: &[u8],
        caller: Caller,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}/client/v4/{path}", self.addr))
            .header(header::CONTENT_TYPE, "application/json");
        let secret = match caller {
            Caller::Admin => Some(&self.token),
            Caller::Scoped => Some(&self.scoped.1),
            Caller::Nobody => None,
        };
        if let Some(secret) = secret {
            req = req.header(header::AUTHORIZATION, format!("Bearer {secret}"));
        } else if body.len() % 2 == 1 {
            req = req.header(header::AUTHORIZATION, "Bearer 00");
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let (parts, bytes) = self.rt.block_on(async {
            let stream = TcpStream::connect(self.addr).await.expect("connect");
            let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            let answer = sender.send_request(req).await;
            let (parts, body) = answer.expect("the admin API answers").into_parts();
            let body = body.collect().await.expect("the answer's body");
            (parts, body.to_bytes())
        });
        let ctype = parts.headers.get(header::CONTENT_TYPE);
        let ctype = ctype.map(|v| v.as_bytes());
        assert_eq!(ctype, Some(&b"application/json"[..]), "{path}");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{path}: the answer is not JSON ({e}): {bytes:?}"));
        (parts.status, value)
    }
}
