//! The admin API driven by a client nobody here wrote: Cloudflare's official
//! Python SDK (pinned; `scripts/setup.sh` installs it under `target/python/`)
//! walks the seeds' flows against a store-mode gateway on loopback holding 260
//! more hostnames, validating every response against the SDK's own models
//! (`tests/sdk/flows.py`).

use std::{path::PathBuf, process::Command};

use gateway_tests::{control::StoreGateway, local::TempDir};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");
const SDK_VERSION: &str = "5.9.0";
const PRELOADED: usize = 260;

fn sdk_python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(format!("target/python/cloudflare-{SDK_VERSION}/bin/python"));
    assert!(
        python.exists(),
        "the cloudflare {SDK_VERSION} SDK is not installed at {}: run scripts/setup.sh (or \
         `cargo xtask setup`)",
        python.display()
    );
    python
}

#[test]
fn the_official_sdk_walks_the_seeds_flows_and_every_list_ends() {
    let python = sdk_python();
    let dir = TempDir::new("sdk-flows");
    let data = dir.0.join("data");
    gateway_tests::control::bulk_load(&data, PRELOADED, |i| format!("h{i}.preloaded.test"))
        .unwrap();
    let token = gateway::control::rotate_token(&data).unwrap();
    let gw = StoreGateway::start(GATEWAY.as_ref(), &data, Some(&token), &[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sdk/flows.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("GATEWAY_API", format!("{}/client/v4", gw.api))
        .env("GATEWAY_TOKEN", &gw.token)
        .env("GATEWAY_ZONE", gw.zone())
        .env("GATEWAY_ACCOUNT", gw.account())
        .env("GATEWAY_TLS_PORT", gw.tls_port.to_string())
        .env("GATEWAY_SERVER_CA", gw.server_ca())
        .env("GATEWAY_PRELOADED", PRELOADED.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the SDK flows failed:\n{stdout}\n{stderr}\ngateway log:\n{}",
        gw.process.log()
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(summary["hostnames"], PRELOADED + 1, "{summary}");
    assert_eq!(summary["steps"], 14, "{summary}");
}
