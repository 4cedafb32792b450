//! Every admin API route that takes a body or a query, through the real router: a
//! store-mode control plane (redb store in a temporary directory, terminator
//! snapshot in force) serving `admin::api::serve` on loopback, driven by an
//! HTTP/1.1 client (the API has no entry point without a socket).
//!
//! Input: up to four requests separated by `0xff`. A request is a route byte
//! (low six bits: the route and method of `ROUTES`; high two: 0 a raw body
//! with the admin token, 1 a raw body with the scoped token, 2 a JSON object
//! built from the bytes with the admin token, 3 a raw body without a valid
//! token), an id byte (which hostname, certificate, rule, CA, API token,
//! ruleset or ruleset version the path names, or a missing one), then the
//! body; a route with `{Q}` takes the body as its query string too.
//! `@NAME@` placeholders become fixtures (`fixtures/api_bodies`: CAs, a server
//! certificate and keys, CSRs, CRL files) or ids of the baseline. Every input
//! starts from the same baseline state (hostnames, an uploaded CA with a CRL,
//! a client certificate, two rules, a scoped API token), which is put back
//! after it, so the store stays small (the audit log, which no API call
//! trims, grows by the calls that change something). Bodies that would fetch
//! a CRL from the network or from files outside the temporary directory are
//! not sent.
//!
//! Invariants, for every answer:
//! - no panic, anywhere (the server's tasks included);
//! - the answer is JSON with `Content-Type: application/json` in the v4
//!   envelope: `success` (bool), `errors` and `messages` (arrays), `result`;
//!   the status is 2xx iff `success`; a failure has at least one error, each
//!   with a numeric `code` and a `message`, and a null `result`;
//! - no 5xx, except a 502 from a CRL refresh whose source failed (documented);
//! - a refused call (4xx) and any GET leave the committed state unchanged;
//! - the committed state reads back unchanged from the JSON the store keeps;
//! - a call without a valid token is refused with 401 or 403;
//! - a call with the scoped token whose route needs a permission group the
//!   token does not hold (now; write implies read) is refused with 403, and a
//!   token it creates or changes holds only groups it holds itself.
#![no_main]

#[path = "api_bodies/harness.rs"]
mod harness;

use std::sync::LazyLock;

use gateway::control::model::State;
use harness::{Caller, Harness};
use http::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// Body fields of the hostname, association, client certificate, rule, CA,
/// token and ruleset routes.
const HOST: &str = "hostname wildcard ssl settings min_tls_version ciphers custom_certificate \
    custom_key type method custom_origin_server mtls enabled forward_client_cert";
const ASSOC: &str = "hostnames mtls_certificate_id";
const CERT: &str = "csr validity_days generate_key common_name";
const RULE: &str = "expression action description enabled position before after index";
const UPLOAD: &str = "ca certificates name crl_source";
const TOKEN: &str = "name policies expires_on effect permission_groups id status not_before \
    condition resources meta";
const RULESET: &str = "name description kind phase rules id expression action enabled ref \
    position index before after";

/// Routes by the route byte's low six bits (`{…}` are ids, see
/// `Harness::path`; `{Q}` the body as a query string), with the fields of
/// their bodies.
const ROUTES: [(&str, &str); 64] = [
    ("PATCH zones/{Z}/settings/min_tls_version", "value"),
    ("PATCH zones/{Z}/settings/ciphers", "value"),
    ("POST zones/{Z}/custom_hostnames", HOST),
    ("PATCH zones/{Z}/custom_hostnames/{H}", HOST),
    (
        "PUT zones/{Z}/certificate_authorities/hostname_associations",
        ASSOC,
    ),
    ("POST zones/{Z}/client_certificates", CERT),
    ("PATCH zones/{Z}/client_certificates/{C}", "reactivate"),
    ("POST zones/{Z}/{E}/rules", RULE),
    ("PATCH zones/{Z}/{E}/rules/{R}", RULE),
    ("POST accounts/{A}/mtls_certificates", UPLOAD),
    ("PUT accounts/{A}/mtls_certificates/{U}/crl", "source"),
    ("POST zones/{Z}/custom_hostnames", HOST),
    ("PATCH zones/{Z}/custom_hostnames/{H}", HOST),
    ("POST zones/{Z}/filters/validate-expr", "expression"),
    ("POST accounts/{A}/mtls_certificates", UPLOAD),
    (
        "PUT zones/{Z}/certificate_authorities/hostname_associations",
        ASSOC,
    ),
    ("DELETE zones/{Z}/custom_hostnames/{H}", ""),
    ("DELETE zones/{Z}/{E}/rules/{R}", ""),
    ("DELETE accounts/{A}/mtls_certificates/{U}", ""),
    ("DELETE zones/{Z}/client_certificates/{C}", ""),
    ("DELETE accounts/{A}/mtls_certificates/{U}/crl", ""),
    ("POST accounts/{A}/mtls_certificates/{U}/crl/refresh", ""),
    ("GET zones/{Z}/custom_hostnames/{H}", ""),
    (
        "GET zones/{Z}/certificate_authorities/hostname_associations?mtls_certificate_id={U}",
        "",
    ),
    ("GET accounts/{A}/mtls_certificates", ""),
    ("GET zones/{Z}/{E}", ""),
    ("GET zones/{Z}/client_certificates?status=active", ""),
    ("PUT zones/{Z}/custom_hostnames", ""),
    ("POST zones/{Z}/settings/min_tls_version", ""),
    ("PATCH zones/{Z}/settings/{H}", ""),
    ("GET zones/{Z}/managed_ca", ""),
    ("GET zones/{Z}/expiring_certificates?days=400", ""),
    // API tokens.
    ("POST user/tokens", TOKEN),
    ("PUT user/tokens/{T}", TOKEN),
    ("GET user/tokens?{Q}", ""),
    ("GET user/tokens/{T}", ""),
    ("DELETE user/tokens/{T}", ""),
    ("GET user/tokens/verify", ""),
    ("GET user/tokens/permission_groups?{Q}", ""),
    ("PUT user/tokens/{T}/value", ""),
    ("POST user/tokens", TOKEN),
    ("PUT user/tokens/{T}", TOKEN),
    ("PATCH user/tokens/{T}", TOKEN),
    ("POST user/tokens/verify", ""),
    // The ruleset by id and by entry point, its rules and versions.
    ("GET zones/{Z}/rulesets?{Q}", ""),
    ("POST zones/{Z}/rulesets", RULESET),
    ("GET zones/{Z}/rulesets/{S}", ""),
    ("PUT zones/{Z}/rulesets/{S}", RULESET),
    ("DELETE zones/{Z}/rulesets/{S}", ""),
    ("POST zones/{Z}/rulesets/{S}/rules", RULE),
    ("PATCH zones/{Z}/rulesets/{S}/rules/{R}", RULE),
    ("DELETE zones/{Z}/rulesets/{S}/rules/{R}", ""),
    ("GET zones/{Z}/rulesets/{S}/versions?{Q}", ""),
    ("GET zones/{Z}/rulesets/{S}/versions/{V}", ""),
    ("GET zones/{Z}/{E}/versions/{V}", ""),
    ("PUT zones/{Z}/{E}", RULESET),
    ("DELETE zones/{Z}/{E}", ""),
    ("PUT zones/{Z}/rulesets/{S}/versions/{V}", ""),
    // The audit log.
    ("GET accounts/{A}/audit_logs?{Q}", ""),
    ("GET accounts/{A}/audit_logs", ""),
    ("POST accounts/{A}/audit_logs", ""),
    ("GET accounts/{A}0/audit_logs", ""),
    ("GET zones/{Z}?{Q}", ""),
    ("GET zones/{Z}/custom_hostnames?{Q}", ""),
];

/// The field names of every body (a route's own, mostly).
const KEYS: &str = "value hostname wildcard ssl settings min_tls_version ciphers \
    custom_certificate custom_key type method custom_origin_server mtls enabled \
    forward_client_cert hostnames mtls_certificate_id csr validity_days generate_key common_name \
    reactivate expression action description position before after index ca certificates name \
    crl_source source policies expires_on effect permission_groups id status not_before condition \
    resources meta kind phase rules ref";

/// Strings the bodies carry (placeholders included), `|`-separated.
const STRINGS: &str = "1.0|1.1|1.2|1.3|1.4|block|allow|log|none|cloudflare|rfc9440|\
    fuzz.example.com|api.example.com|localhost|x.fuzz.example.com|*.example.com|b.example.com|\
    ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-AES256-GCM-SHA384|http://127.0.0.1:9|\
    http.host eq \"a.test\"|not cf.tls_client_auth.cert_verified|http.host in {\"a\" \"b\"}|\
    @CA@|@CA2@|@LEAF@|@CERT@|@KEY@|@KEY2@|@CSR@|@WEAKCSR@|@NOCNCSR@|@CRL@|@BADCRL@|@NOFILE@|\
    @CAID@|@MANAGED@|@SERVERCA@|@RULE@|@RULE2@|@TOKEN@|@RULESET@|first-run|deny|zone|custom|\
    http_request_firewall_custom|SSL and Certificates Read|SSL and Certificates Write|\
    Zone Settings Write|Firewall Services Read|Firewall Services Write|API Tokens Read|\
    API Tokens Write|Account Settings Read|Analytics Read|2099-01-01T00:00:00Z|\
    2001-01-01T00:00:00Z|2099-13-01T00:00:00Z|";

/// `API_BODIES_TRACE=1`: print each call and its answer's status and errors.
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("API_BODIES_TRACE").is_some());

/// The input's bytes, read one by one (zeros once they run out).
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn next(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// A JSON value built from the bytes: mostly known strings, with objects of
/// known keys, arrays, numbers, booleans, nulls and raw strings.
fn value(h: &Harness, b: &mut Cursor, keys: &[&str], depth: u32) -> Value {
    match b.next() % 8 {
        0 if depth < 3 => {
            let fields = b.next() as usize % 6;
            object(h, b, keys, depth + 1, fields)
        }
        1 if depth < 3 => (0..b.next() % 4)
            .map(|_| value(h, b, keys, depth + 1))
            .collect(),
        2 => {
            let n = b.next() as usize % 32;
            Value::String(String::from_utf8_lossy(b.take(n)).into_owned())
        }
        3 => Value::Bool(b.next() % 2 == 1),
        4 => {
            let numbers: Vec<&str> = "0 1 -1 30 3650 3651 4294967296 1.5 1e300"
                .split(' ')
                .collect();
            serde_json::from_str(numbers[b.next() as usize % numbers.len()]).unwrap()
        }
        5 => Value::Null,
        _ => {
            let strings: Vec<&str> = STRINGS.split('|').collect();
            let s = strings[b.next() as usize % strings.len()];
            Value::String(String::from_utf8(h.expand(s.as_bytes(), false)).unwrap())
        }
    }
}

fn object(h: &Harness, b: &mut Cursor, keys: &[&str], depth: u32, fields: usize) -> Value {
    let all: Vec<&str> = KEYS.split_whitespace().collect();
    let mut map = Map::new();
    for _ in 0..fields {
        let k = b.next() as usize;
        let key = match keys.get(k % 16) {
            Some(key) => key,
            None => all[k % all.len()],
        };
        map.insert(key.into(), value(h, b, keys, depth));
    }
    Value::Object(map)
}

/// Whether a body could make the gateway fetch a CRL from the network (but a
/// closed loopback port) or read a file outside the harness's directory.
fn reaches_out(h: &Harness, v: &Value) -> bool {
    let outside = |s: &str| {
        if s.starts_with("http://") {
            return s != "http://127.0.0.1:9" && !s.starts_with("http://127.0.0.1:9/");
        }
        s.starts_with('/') && std::fs::canonicalize(s).is_ok_and(|p| !p.starts_with(&h.root))
    };
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| {
            (k == "crl_source" || k == "source") && v.as_str().is_some_and(outside)
                || reaches_out(h, v)
        }),
        Value::Array(a) => a.iter().any(|v| reaches_out(h, v)),
        _ => false,
    }
}

/// `bytes` as a query string: unreserved characters, `=` and `&` as they
/// are, every other byte percent-encoded.
fn query(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"=&-._~:+".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The permission group a call needs (README, "Admin API"): reading (GET) or
/// changing what its path names; `None` for the zone and `verify`.
fn needed(method: &Method, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('?').next().unwrap_or_default().split('/').collect();
    let group = match segments.as_slice() {
        ["zones"] | ["zones", _] | ["user", "tokens", "verify"] => return None,
        ["zones", _, "filters", "validate-expr"] => return Some("Firewall Services Read".into()),
        ["zones", _, "settings", ..] => "Zone Settings",
        ["zones", _, "rulesets", ..] => "Firewall Services",
        ["zones", ..] | ["accounts", _, "mtls_certificates", ..] => "SSL and Certificates",
        ["accounts", _, "audit_logs"] => return Some("Account Settings Read".into()),
        ["user", "tokens", ..] => "API Tokens",
        _ => return None,
    };
    let kind = if *method == Method::GET { "Read" } else { "Write" };
    Some(format!("{group} {kind}"))
}

/// Whether `held` (permission group names) grants `group`: write implies read.
fn grants(held: &[String], group: &str) -> bool {
    let write = group.strip_suffix(" Read").map(|g| format!("{g} Write"));
    held.iter().any(|h| h == group || Some(h) == write.as_ref())
}

/// A token's permission groups, by name.
fn groups<P: ToString>(permissions: &[P]) -> Vec<String> {
    permissions.iter().map(ToString::to_string).collect()
}

/// The scoped token's invariants: refused beyond what it holds now, and what
/// it grants to tokens is what it holds.
fn check_scoped(h: &Harness, before: &State, after: &State, call: (&Method, &str, StatusCode)) {
    let (method, path, status) = call;
    let (id, _) = &h.scoped;
    let baseline = h.baseline_scoped_hash();
    let held = before
        .tokens
        .get(id)
        .filter(|t| t.secret_sha256 == baseline)
        .filter(|t| t.expires_on.is_none_or(|at| at > gateway::clock::now()))
        .map(|t| groups(&t.permissions));
    let Some(held) = held else {
        assert!(
            matches!(status.as_u16(), 401 | 403) && before == after,
            "a gone, rolled or expired token was not refused: {method} {path} → {status}"
        );
        return;
    };
    if let Some(group) = needed(method, path).filter(|g| !grants(&held, g)) {
        assert!(
            status == StatusCode::FORBIDDEN && before == after,
            "a token without {group:?} was not refused: {method} {path} → {status}"
        );
    }
    for (tid, t) in after.tokens.iter() {
        if before.tokens.get(tid).is_some_and(|b| b.permissions == t.permissions) {
            continue;
        }
        let granted = groups(&t.permissions);
        assert!(
            granted.iter().all(|g| grants(&held, g)),
            "a token holding {held:?} granted {granted:?}: {method} {path}"
        );
    }
}

/// Sends one request and checks the answer and the state around it.
fn one(h: &Harness, chunk: &[u8]) {
    let [route, pick, rest @ ..] = chunk else {
        return;
    };
    let (route_text, keys) = ROUTES[usize::from(route & 63)];
    let (method, template) = route_text.split_once(' ').unwrap();
    let keys: Vec<&str> = keys.split_whitespace().collect();
    let method: Method = method.parse().unwrap();
    let caller = [Caller::Admin, Caller::Scoped, Caller::Admin, Caller::Nobody][usize::from(route >> 6)];
    let body = if route >> 6 == 2 {
        let fields = (rest.len() / 4).clamp(1, 8);
        serde_json::to_vec(&object(h, &mut Cursor(rest), &keys, 0, fields)).unwrap()
    } else {
        h.expand(rest, true)
    };
    if serde_json::from_slice(&body).is_ok_and(|v| reaches_out(h, &v)) {
        return;
    }
    let path = h.path(template, *pick).replace("{Q}", &query(&body));
    let before = h.state();
    let (status, answer) = h.call(method.clone(), &path, &body, caller);
    let after = h.state();
    let what = || {
        let body = String::from_utf8_lossy(&body);
        format!("{method} {path} {body}\n→ {status} {answer:#}")
    };
    if *TRACE {
        eprintln!("{caller:?} {method} {template} → {status} {}", answer["errors"]);
    }
    if let Err(why) = envelope(&answer, status) {
        panic!("{why}: {}", what());
    }
    let refresh = status == StatusCode::BAD_GATEWAY && template.ends_with("/refresh");
    let stored = serde_json::from_value::<State>(serde_json::to_value(&after).unwrap());
    let failed = [
        (status.is_server_error() && !refresh, "a server error"),
        (
            !stored.is_ok_and(|s| s == after),
            "the state does not survive its JSON records",
        ),
        (
            (status.is_client_error() || method == Method::GET) && before != after,
            "a refused call or a GET changed the state",
        ),
        (
            caller == Caller::Nobody && !matches!(status.as_u16(), 401 | 403),
            "a call without the token was not refused",
        ),
    ];
    if let Some((_, why)) = failed.iter().find(|(failed, _)| *failed) {
        panic!("{why}: {}", what());
    }
    if caller == Caller::Scoped {
        check_scoped(h, &before, &after, (&method, &path, status));
    }
}

/// Checks the v4 envelope: `success`, `errors`, `messages`, `result`, and
/// `success` agreeing with the status and the errors.
fn envelope(answer: &Value, status: StatusCode) -> Result<(), &'static str> {
    let success = answer["success"].as_bool();
    let (Some(success), Some(errors)) = (success, answer["errors"].as_array()) else {
        return Err("not a v4 envelope");
    };
    if !answer["messages"].is_array() || answer.get("result").is_none() {
        return Err("not a v4 envelope");
    }
    if success {
        if !status.is_success() || !errors.is_empty() {
            return Err("a success with a non-2xx or errors");
        }
        return Ok(());
    }
    if status.is_success() {
        return Err("a failure with a 2xx");
    }
    let described = errors
        .iter()
        .all(|e| e["code"].is_u64() && e["message"].is_string());
    if errors.is_empty() || !described {
        return Err("a failure without described errors");
    }
    if !answer["result"].is_null() {
        return Err("a failure with a result");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let h = harness::get();
    for chunk in data.split(|&b| b == 0xff).take(4) {
        one(h, chunk);
    }
    h.reset();
});
