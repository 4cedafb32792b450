//! Revocation details: delta CRLs merged into their base, and leaf-only
//! semantics for chains through an intermediate that has no CRL.

use std::time::{Duration, Instant};

use gateway_tests::{
    local::curl,
    mtls::{MtlsSetup, config},
    pki::Issued,
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

fn status(s: &MtlsSetup, cert: &std::path::Path, key: &std::path::Path) -> u16 {
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    curl(
        "admin.test",
        s.port,
        "/",
        s.ca(),
        &["--cert", &cert, "--key", &key],
    )
    .0
}

fn status_of(s: &MtlsSetup, c: &Issued) -> u16 {
    status(s, &c.cert, &c.key)
}

#[test]
fn a_delta_crl_adds_revocations_and_lifts_released_ones() {
    let s = MtlsSetup::start(GATEWAY, "crl-delta", "");
    assert_eq!(status_of(&s, &s.bob), 403, "bob is in the base CRL");
    assert_eq!(status_of(&s, &s.alice), 200);
    // The delta: alice revoked, bob released (removeFromCRL).
    s.corp.revoke(&s.alice);
    s.corp.release(&s.bob);
    s.corp.delta_crl(&s.path("corp-delta.crl"));
    let text = config(s.ports, &s.carol.serial, "").replace(
        r#"crl = ["corp.crl"]"#,
        r#"crl = ["corp.crl", "corp-delta.crl"]"#,
    );
    s.write_config(&text);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(&s, &s.alice) != 403 {
        assert!(
            Instant::now() < deadline,
            "the delta CRL never applied:\n{}",
            s.gateway.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status_of(&s, &s.bob), 200, "released by the delta");
    assert_eq!(status_of(&s, &s.dave), 200);
}

#[test]
fn only_the_leaf_is_checked_so_an_intermediate_without_a_crl_does_not_fail_its_leaves() {
    let s = MtlsSetup::start(GATEWAY, "crl-leaf-only", "");
    let intermediate = s.corp.intermediate("corp-issuing");
    let leaf = intermediate.client("erin", None);
    // The client sends its chain: leaf, then the intermediate.
    let chain = s.path("erin-chain.pem");
    let mut pem = std::fs::read(&leaf.cert).unwrap();
    pem.extend(std::fs::read(&intermediate.cert).unwrap());
    std::fs::write(&chain, pem).unwrap();
    assert_eq!(
        status(&s, &chain, &leaf.key),
        200,
        "the corp CRL says nothing of the intermediate"
    );
    let (cert, key) = (chain.display().to_string(), leaf.key.display().to_string());
    let (_, body) = curl(
        "api.test",
        s.port,
        "/",
        s.ca(),
        &["--cert", &cert, "--key", &key],
    );
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["cf-cert-verified"][0], "true");
    assert_eq!(
        seen["headers"]["cf-cert-issuer-dn"][0],
        "CN=corp-issuing,O=Gateway Tests,C=US"
    );
    let serial = gateway_tests::pki::x509_field(&intermediate.cert, &["-serial"]);
    assert_eq!(seen["headers"]["cf-cert-issuer-serial"][0], serial.as_str());
    // Without the intermediate the leaf does not chain to the CA.
    assert_eq!(status(&s, &leaf.cert, &leaf.key), 403);
}
