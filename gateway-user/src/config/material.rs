//! Certificates, keys and CRLs as the snapshot builder reads them: a file named
//! by the configuration file, or bytes held by the control plane's store.

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use serde::Deserialize;

/// Where a certificate, key or CRL comes from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "PathBuf")]
pub enum Material {
    /// A file, read when the snapshot is built (and watched for changes).
    File(PathBuf),
    /// Bytes already in memory, with a name for error messages.
    Inline {
        /// What the bytes are, e.g. `CA 3f2a… certificate`.
        label: String,
        /// PEM or DER.
        data: Arc<[u8]>,
    },
}

impl From<PathBuf> for Material {
    fn from(path: PathBuf) -> Self {
        Material::File(path)
    }
}

impl Material {
    /// Bytes held in memory.
    pub fn inline(label: impl Into<String>, data: impl Into<Arc<[u8]>>) -> Material {
        Material::Inline {
            label: label.into(),
            data: data.into(),
        }
    }

    /// The bytes: the file's contents, or the inline data.
    pub fn read(&self) -> anyhow::Result<Cow<'_, [u8]>> {
        match self {
            Material::File(path) => std::fs::read(path)
                .map(Cow::Owned)
                .with_context(|| format!("cannot read {}", path.display())),
            Material::Inline { data, .. } => Ok(Cow::Borrowed(data)),
        }
    }

    /// Inline DER (not PEM), shared rather than copied.
    pub fn shared_der(&self) -> Option<Arc<[u8]>> {
        match self {
            Material::Inline { data, .. } if data.first() == Some(&0x30) => Some(data.clone()),
            _ => None,
        }
    }

    /// The file, if it is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Material::File(path) => Some(path),
            Material::Inline { .. } => None,
        }
    }

    /// Makes a relative file path relative to `dir`.
    pub fn rebase(&mut self, dir: &Path) {
        if let Material::File(path) = self
            && path.is_relative()
        {
            *path = dir.join(&*path);
        }
    }
}

impl std::fmt::Display for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Material::File(path) => write!(f, "{}", path.display()),
            Material::Inline { label, .. } => f.write_str(label),
        }
    }
}
