//! `gateway run`'s fleet-mode arguments: etcd as the store.

use std::path::PathBuf;

use anyhow::Context;

use crate::control::backend::fleet::{FleetOptions, etcd::EtcdOptions};

/// Fleet mode: many gateways share one configuration in etcd.
#[derive(clap::Args, Debug)]
pub(super) struct FleetArgs {
    /// Fleet mode: etcd's client URLs (comma-separated) become the store, shared by every
    /// gateway given the same URLs and prefix; DATA_DIR keeps a local copy.
    #[arg(
        long,
        value_delimiter = ',',
        env = "GATEWAY_ETCD",
        value_name = "URL,...",
        conflicts_with = "config"
    )]
    etcd: Vec<String>,
    /// The key prefix the fleet's configuration lives under.
    #[arg(long, default_value = "/gateway", requires = "etcd")]
    etcd_prefix: String,
    /// CA certificate (PEM) verifying etcd's members, for https:// URLs.
    #[arg(long, requires = "etcd")]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client-certificate auth.
    #[arg(long, requires_all = ["etcd", "etcd_key"])]
    etcd_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, requires_all = ["etcd", "etcd_cert"])]
    etcd_key: Option<PathBuf>,
    /// The fleet's master key file (lines `ID HEX`, the first seals): private keys are
    /// stored in etcd only sealed under it. Every node is given the same file.
    #[arg(long, env = "GATEWAY_MASTER_KEY", requires = "etcd")]
    master_key: Option<PathBuf>,
    /// This node's name in the fleet (default: the machine's hostname).
    #[arg(long, requires = "etcd")]
    node_name: Option<String>,
}

impl FleetArgs {
    /// The fleet options, if `--etcd` was given.
    pub(super) fn options(self) -> anyhow::Result<Option<FleetOptions>> {
        if self.etcd.is_empty() {
            return Ok(None);
        }
        let master_key = self.master_key.context(
            "--etcd needs --master-key FILE: private keys are stored in etcd only sealed \
             (make one with: printf 'k1 %s\\n' \"$(openssl rand -hex 32)\" > master.key)",
        )?;
        let node = match self.node_name {
            Some(n) => n,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .context("cannot read the hostname; pass --node-name")?
                .trim()
                .to_string(),
        };
        Ok(Some(FleetOptions {
            etcd: EtcdOptions {
                endpoints: self.etcd,
                ca: self.etcd_ca,
                identity: self.etcd_cert.zip(self.etcd_key),
            },
            prefix: self.etcd_prefix,
            master_key,
            node,
        }))
    }
}
