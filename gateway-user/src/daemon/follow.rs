//! File mode: the configuration file and the files it names are followed, and
//! a change is reloaded into both layers.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use log::{error, info};

use crate::{config::Config, layers::Layers};

/// The configuration file and every file it names, with their modification
/// times: polling them is a few `stat` calls, no parsing.
pub(super) struct Watch {
    files: Vec<PathBuf>,
    seen: Vec<Option<SystemTime>>,
}

impl Watch {
    pub(super) fn new(path: &Path, config: &Config) -> Watch {
        let files: Vec<PathBuf> = std::iter::once(path.to_path_buf())
            .chain(config.files())
            .collect();
        let seen = modified(&files);
        Watch { files, seen }
    }

    /// Whether any file changed since the last look.
    pub(super) fn changed(&mut self) -> bool {
        let now = modified(&self.files);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }
}

fn modified(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Re-reads the configuration and swaps the new policy into both layers; on
/// error, keeps the old one. The watch follows the newest readable
/// configuration, its files stated before they are read.
pub(super) fn reload(layers: &mut Layers, path: &Path, watch: &mut Watch) {
    let result = Config::load(path).and_then(|config| {
        *watch = Watch::new(path, &config);
        layers.apply(&config).map(|()| config)
    });
    match result {
        Ok(c) => info!(
            "configuration reloaded from {}: zone minimum TLS {}, {} hostnames",
            path.display(),
            c.zone.min_tls_version,
            c.hostnames.len()
        ),
        Err(e) => error!(
            "reload of {} failed, keeping the previous configuration: {e:#}",
            path.display()
        ),
    }
}
