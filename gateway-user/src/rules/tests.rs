//! Golden tests of the language: every operator, function and precedence level,
//! the documented examples, positioned errors, and a property test.

use proptest::prelude::*;

use super::{Action, Expression, RuleSet, RuleSpec, sample};

fn eval(expr: &str, pairs: &[&str]) -> bool {
    let e = Expression::compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    e.matches(&sample::from_pairs(pairs.iter().copied()).unwrap())
}

const MTLS: [&str; 4] = [
    "http.host=api.example.com",
    "http.request.uri.path=/admin",
    "cf.tls_client_auth.cert_presented=true",
    "cf.tls_client_auth.cert_verified=true",
];

#[test]
fn documented_examples() {
    let block_unverified =
        r#"(http.host in {"api.example.com"} and not cf.tls_client_auth.cert_verified)"#;
    assert!(!eval(block_unverified, &MTLS));
    assert!(eval(block_unverified, &["http.host=api.example.com"]));
    assert!(!eval(block_unverified, &["http.host=www.example.com"]));
    let admin = r#"((not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/admin"})"#;
    assert!(!eval(admin, &MTLS));
    let mut revoked = MTLS.to_vec();
    revoked.push("cf.tls_client_auth.cert_revoked=true");
    assert!(eval(admin, &revoked));
    assert!(eval(admin, &["http.request.uri.path=/admin"]));
    assert!(!eval(admin, &["http.request.uri.path=/public"]));
}

#[test]
fn every_operator() {
    let r = [
        "http.host=api.example.com",
        "http.request.method=POST",
        "http.user_agent=curl/8.1",
        "ip.src=198.51.100.7",
    ];
    let cases: &[(&str, bool)] = &[
        (r#"http.host eq "api.example.com""#, true),
        (r#"http.host == "API.example.com""#, false),
        (r#"http.host ne "x""#, true),
        (r#"http.host != "api.example.com""#, false),
        (r#"http.request.method lt "PUT""#, true),
        (r#"http.request.method < "GET""#, false),
        (r#"http.request.method le "POST""#, true),
        (r#"http.request.method <= "PO""#, false),
        (r#"http.request.method gt "GET""#, true),
        (r#"http.request.method > "POST""#, false),
        (r#"http.request.method ge "POST""#, true),
        (r#"http.request.method >= "PUT""#, false),
        (r#"http.user_agent contains "curl""#, true),
        (r#"http.user_agent contains "wget""#, false),
        (r#"http.user_agent matches "^curl/[0-9]+\\.""#, true),
        (r#"http.user_agent ~ r"^curl/\d+\.\d+$""#, true),
        (r#"http.user_agent matches "^wget""#, false),
        (r#"http.host wildcard "*.EXAMPLE.com""#, true),
        (r#"http.host wildcard "*.example.org""#, false),
        (r#"http.host strict wildcard "*.example.com""#, true),
        (r#"http.host strict wildcard "*.EXAMPLE.com""#, false),
        (r#"http.host in {"a.example.com" "api.example.com"}"#, true),
        (r#"http.host in {"a.example.com", "b.example.com"}"#, false),
        ("ip.src in {192.0.2.0/24 198.51.100.0/24}", true),
        ("ip.src in {192.0.2.0/24 2001:db8::/32}", false),
        ("ip.src eq 198.51.100.7", true),
        ("ip.src ne 198.51.100.0/24", false),
        ("len(http.host) in {15 16}", true),
        ("len(http.host) gt 20", false),
        ("ssl", true),
        ("not ssl", false),
        ("! ssl", false),
    ];
    for (expr, want) in cases {
        assert_eq!(eval(expr, &r), *want, "{expr}");
    }
}

#[test]
fn precedence_is_not_and_xor_or() {
    // true or (false and false) = true; (true or false) and false would be false.
    assert!(eval("ssl or not ssl and not ssl", &[]));
    // (true xor true) or true = true; true xor (true or true) would be false.
    assert!(eval("ssl xor ssl or ssl", &[]));
    // (true and false) xor true = true; true and (false xor true) is also true, so:
    // false xor (true and true) = true, (false xor true) and true = true; use ^^ with and:
    assert!(
        !eval("ssl ^^ ssl && ssl", &[]),
        "and binds tighter than xor: true ^^ (true && true)"
    );
    assert!(eval("not ssl || ssl", &[]));
    assert!(!eval("not (ssl || ssl)", &[]));
    assert!(eval("(not ssl) xor ssl", &[]));
    assert!(!eval("ssl && !ssl", &[]));
}

#[test]
fn functions_and_indexes() {
    let r = [
        "http.host=API.Example.com",
        "http.request.uri=/a%20b/Admin?x=%2F",
        "http.request.headers=X-Tenant:blue",
        "http.request.headers=x-tenant:green",
        "http.request.headers=accept:text/html",
    ];
    let cases: &[(&str, bool)] = &[
        (r#"lower(http.host) eq "api.example.com""#, true),
        (r#"upper(http.host) eq "API.EXAMPLE.COM""#, true),
        (r#"starts_with(http.request.uri.path, "/a%20")"#, true),
        (r#"ends_with(http.request.uri.path, "/Admin")"#, true),
        (r#"ends_with(lower(http.request.uri.path), "/admin")"#, true),
        (r#"url_decode(http.request.uri.path) eq "/a b/Admin""#, true),
        (r#"url_decode(http.request.uri.query) eq "x=/""#, true),
        (r#"http.request.uri eq "/a%20b/Admin?x=%2F""#, true),
        (
            r#"http.request.full_uri eq "https://api.example.com/a%20b/Admin?x=%2F""#,
            true,
        ),
        (
            r#"concat(lower(http.host), "/", http.request.uri.path) eq "api.example.com//a%20b/Admin""#,
            true,
        ),
        (r#"http.request.headers["x-tenant"][0] eq "blue""#, true),
        (r#"http.request.headers["X-Tenant"][1] eq "green""#, true),
        (
            r#"http.request.headers["x-tenant"][2] ne "anything""#,
            false,
        ),
        (
            r#"any(http.request.headers["x-tenant"][*] == "green")"#,
            true,
        ),
        (
            r#"all(http.request.headers["x-tenant"][*] == "green")"#,
            false,
        ),
        (r#"any(http.request.headers[*] contains "html")"#, true),
        (
            r#"any(lower(http.request.headers["x-tenant"][*]) in {"blue" "red"})"#,
            true,
        ),
        (r#"len(http.request.headers["x-tenant"]) eq 2"#, true),
        (r#"any(http.request.headers["missing"][*] eq "x")"#, false),
        (r#"all(http.request.headers["missing"][*] eq "x")"#, false),
    ];
    for (expr, want) in cases {
        assert_eq!(eval(expr, &r), *want, "{expr}");
    }
}

#[test]
fn client_auth_fields() {
    let r = [
        "cf.tls_client_auth.cert_presented=true",
        "cf.tls_client_auth.cert_subject_dn=CN=alice,O=Example",
        "cf.tls_client_auth.cert_serial=0A1B",
        "cf.tls_client_auth.cert_fingerprint_sha256=ab01",
        "cf.tls_client_auth.cert_issuer_dn_legacy=/C=US/CN=corp",
    ];
    assert!(eval(
        r#"cf.tls_client_auth.cert_subject_dn contains "CN=alice""#,
        &r
    ));
    assert!(eval(
        r#"cf.tls_client_auth.cert_serial in {"0A1B" "FFFF"}"#,
        &r
    ));
    assert!(eval(
        r#"cf.tls_client_auth.cert_fingerprint_sha256 eq "ab01""#,
        &r
    ));
    assert!(eval(
        r#"cf.tls_client_auth.cert_issuer_dn_legacy wildcard "/c=us/*""#,
        &r
    ));
    assert!(eval(
        "cf.tls_client_auth.cert_presented and not cf.tls_client_auth.cert_verified",
        &r
    ));
    assert!(eval(r#"cf.tls_client_auth.cert_ski eq """#, &r));
    assert!(eval(
        r#"cf.tls_version eq "TLSv1.3" and cf.tls_cipher contains "AES""#,
        &[]
    ));
}

fn spec(id: &str, expr: &str, action: Action) -> RuleSpec {
    RuleSpec {
        id: id.into(),
        description: String::new(),
        expression: expr.into(),
        action,
        enabled: true,
    }
}

#[test]
fn rule_order_and_actions() {
    let mut specs = vec![
        spec("log-all", "ssl", Action::Log),
        spec(
            "allow-health",
            r#"http.request.uri.path eq "/health""#,
            Action::Allow,
        ),
        spec(
            "block-unverified",
            "not cf.tls_client_auth.cert_verified",
            Action::Block,
        ),
        spec("never", "not ssl", Action::Block),
    ];
    specs.push(RuleSpec {
        enabled: false,
        ..spec("disabled", "ssl", Action::Block)
    });
    let set = RuleSet::compile(&specs).unwrap();
    assert_eq!(set.len(), 4);
    let health = sample::from_pairs(["http.request.uri.path=/health"]).unwrap();
    let v = set.evaluate(&health);
    assert_eq!(v.decided_by, Some(("allow-health", Action::Allow)));
    assert_eq!(
        v.matched,
        vec![("log-all", Action::Log), ("allow-health", Action::Allow)]
    );
    let other = sample::blank();
    let v = set.evaluate(&other);
    assert!(v.blocked());
    assert_eq!(v.decided_by, Some(("block-unverified", Action::Block)));
    let ok = sample::from_pairs(["cf.tls_client_auth.cert_verified=true"]).unwrap();
    let v = set.evaluate(&ok);
    assert!(!v.blocked() && v.decided_by.is_none());
    let bad = RuleSet::compile(&[spec("broken", "http.host eq", Action::Block)]).unwrap_err();
    assert_eq!(bad.0, "broken");
    // `decide` (the terminator's, collecting nothing) agrees with `evaluate`.
    for request in [&health, &other, &ok] {
        let mut matched = Vec::new();
        let decided = set.decide(request, |i| {
            let rule = &set.rules()[i];
            matched.push((rule.id.as_str(), rule.action));
        });
        let v = set.evaluate(request);
        assert_eq!((decided, matched), (v.decided_by, v.matched));
    }
}

#[test]
fn errors_point_at_the_problem() {
    // (expression, line, column, part of the message)
    let cases: &[(&str, usize, usize, &str)] = &[
        ("", 1, 1, "expected a field"),
        ("http.host eq", 1, 13, "expected a value"),
        (r#"http.hots eq "a""#, 1, 1, "unknown field `http.hots`"),
        (r#"http.host eq 5"#, 1, 14, "expected a string"),
        (r#"http.host eq "a" and"#, 1, 21, "expected a field"),
        (r#"(http.host eq "a""#, 1, 18, "expected `)`"),
        (
            r#"http.host eq "a")"#,
            1,
            17,
            "expected `and`, `or`, `xor` or the end",
        ),
        (r#"http.host in {"a" "b""#, 1, 22, "expected `}`"),
        (r#"http.host in {}"#, 1, 15, "empty set"),
        (
            r#"http.host in {"a" 5}"#,
            1,
            19,
            "every item must be a string",
        ),
        (
            r#"http.host eq "unterminated"#,
            1,
            14,
            "unterminated string",
        ),
        (
            r#"http.host matches "(""#,
            1,
            19,
            "invalid regular expression",
        ),
        ("ip.src eq 300.1.1.1", 1, 11, "not an IP address"),
        ("ip.src in {10.0.0.0/33}", 1, 1, "at most /32"),
        ("ip.src contains \"1\"", 1, 1, "eq, ne or in"),
        ("http.host", 1, 1, "expected a Boolean expression"),
        ("lower(ssl) eq \"x\"", 1, 7, "takes a String"),
        (
            "frobnicate(http.host)",
            1,
            1,
            "unknown function frobnicate()",
        ),
        ("starts_with(http.host)", 1, 1, "takes 2 argument(s)"),
        (
            r#"http.request.headers["a"] eq "b""#,
            1,
            1,
            "this is an array",
        ),
        (
            r#"http.request.headers["a"][*] eq "b""#,
            1,
            1,
            "wrap it in any(...) or all(...)",
        ),
        (
            r#"any(http.host eq "a")"#,
            1,
            5,
            "takes a comparison over [*]",
        ),
        ("ssl eq \"true\"", 1, 1, "cannot be compared"),
        (
            "http.host strict eq \"a\"",
            1,
            18,
            "expected `wildcard` after `strict`",
        ),
        ("http.host eq \"a\" &", 1, 18, "unexpected character '&'"),
        (
            "http.host eq \"a\"\nand\nhttp.uri eq \"b\"",
            3,
            1,
            "unknown field `http.uri`",
        ),
        (r#"http.host eq "\d""#, 1, 15, "unknown escape"),
        ("http.host in $bad_hosts", 1, 14, "named lists"),
        ("not", 1, 4, "expected a field"),
        (&"(".repeat(100), 1, 65, "nested deeper"),
    ];
    assert!(cases.len() >= 20);
    for (expr, line, column, message) in cases {
        let err = Expression::compile(expr).expect_err(expr);
        assert!(err.message.contains(message), "{expr:?}: {err}");
        assert_eq!((err.line, err.column), (*line, *column), "{expr:?}: {err}");
        let mut excerpt = err.excerpt.lines();
        let (text, caret) = (excerpt.next().unwrap(), excerpt.next().unwrap());
        assert_eq!(caret.trim_start(), "^", "{expr:?}: a caret");
        let under: Option<char> = text.chars().nth(caret.len() - 1);
        let at_offset: Option<char> = expr
            .get(err.offset..)
            .and_then(|s| s.chars().next())
            .filter(|c| *c != '\n');
        assert_eq!(
            under, at_offset,
            "{expr:?}: the caret is under the error\n{err}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,200}") {
        let _ = Expression::compile(&src);
    }

    #[test]
    fn token_soup_never_panics(words in prop::collection::vec(prop::sample::select(vec![
        "http.host", "ip.src", "ssl", "cf.tls_client_auth.cert_verified", "http.request.headers",
        "eq", "ne", "in", "and", "or", "xor", "not", "!", "(", ")", "{", "}", "[", "]", "[*]", "*",
        "\"a\"", "r\"b\"", "1", "10.0.0.0/8", "::1", "lower(", "any(", "len(", ",", "==", "~", "matches",
        "wildcard", "strict", "contains", "concat(", "&&", "||", "^^",
    ]), 0..24)) {
        let src = words.join(" ");
        if let Ok(e) = Expression::compile(&src) {
            // Whatever compiles evaluates without panicking.
            let _ = e.matches(&sample::blank());
        }
    }

    #[test]
    fn evaluation_on_arbitrary_values_never_panics(host in "\\PC{0,64}", path in "\\PC{0,64}", header in "[ -~]{0,40}") {
        let mut r = sample::blank();
        r.host = host.into();
        r.path = path.into();
        if let Ok(v) = http::HeaderValue::from_str(&header) {
            r.headers.to_mut().append("x-test", v);
        }
        for expr in [
            r#"url_decode(http.request.uri.path) contains "admin""#,
            r#"any(lower(http.request.headers[*]) wildcard "*a*b*")"#,
            r#"http.host matches "^(a+)+$""#,
            r#"len(concat(http.host, http.request.uri.path)) gt 10"#,
        ] {
            let _ = Expression::compile(expr).unwrap().matches(&r);
        }
    }
}

#[test]
fn host_index_keeps_rule_order_and_semantics() {
    let set = RuleSet::compile(&[
        spec("log-any", "ssl", Action::Log),
        spec("a-only", r#"http.host eq "a.test" and ssl"#, Action::Log),
        spec(
            "a-or-b",
            r#"http.host in {"a.test" "b.test"} or http.host eq "c.test""#,
            Action::Log,
        ),
        spec("not-scoped", r#"http.host eq "a.test" or ssl"#, Action::Log),
        spec("negated", r#"not http.host eq "a.test""#, Action::Block),
    ])
    .unwrap();
    let ids = |host: &str| -> Vec<String> {
        let r = sample::from_pairs([format!("http.host={host}").as_str()]).unwrap();
        set.evaluate(&r)
            .matched
            .iter()
            .map(|(id, _)| id.to_string())
            .collect()
    };
    assert_eq!(ids("a.test"), ["log-any", "a-only", "a-or-b", "not-scoped"]);
    assert_eq!(
        ids("c.test"),
        ["log-any", "a-or-b", "not-scoped", "negated"]
    );
    assert_eq!(ids("z.test"), ["log-any", "not-scoped", "negated"]);
}

#[test]
fn long_chains_do_not_overflow_the_stack() {
    let terms: Vec<String> = (0..20_000)
        .map(|i| format!("http.host eq \"h{i}\""))
        .collect();
    let e = Expression::compile(&terms.join(" or ")).unwrap();
    assert!(e.matches(&sample::from_pairs(["http.host=h19999"]).unwrap()));
    let xor = vec!["ssl"; 1001].join(" xor ");
    assert!(eval(&xor, &[]), "an odd number of true terms");
    let stars = format!(
        "any(http.request.headers[\"a\"]{} eq \"x\")",
        "[*]".repeat(10_000)
    );
    let err = Expression::compile(&stars).unwrap_err();
    assert!(err.message.contains("nested deeper"), "{err}");
}

/// Fuzz finding (`rules` target): an expression over the length limit whose
/// byte at the limit falls inside a character panicked while the error was
/// positioned (`&source[..offset]` off a char boundary).
#[test]
fn length_limit_inside_a_character_is_an_error_not_a_panic() {
    use super::{error::RuleError, parser::MAX_EXPRESSION_LEN};
    let src = "€".repeat(MAX_EXPRESSION_LEN / 3 + 1);
    assert!(!src.is_char_boundary(MAX_EXPRESSION_LEN));
    let err = Expression::compile(&src).unwrap_err();
    assert!(err.message.contains("longer than"), "{}", err.message);
    assert!(err.offset <= MAX_EXPRESSION_LEN && src.is_char_boundary(err.offset));
    assert_eq!((err.line, err.column), (1, err.offset / 3 + 1));
    let inside = RuleError::at("aé", 2, "x");
    assert_eq!((inside.offset, inside.column), (1, 2));
}
