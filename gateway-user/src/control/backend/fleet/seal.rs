//! Envelope encryption of the private keys a fleet keeps in etcd.
//!
//! Each secret is encrypted with AES-256-GCM under a data key of its own; the
//! data key is encrypted (wrapped) under the master key, whose id is kept
//! beside it so the master key can be rotated: the key file lists every master
//! key still in use, the first one sealing new secrets. The secret's row key
//! is authenticated with it, so a sealed key moved to another row does not open.

use std::{collections::HashMap, os::unix::fs::PermissionsExt, path::Path};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use boring::symm::{Cipher, decrypt_aead, encrypt_aead};
use serde::{Deserialize, Serialize};

/// The algorithm every envelope names.
const ALGORITHM: &str = "AES-256-GCM";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The master keys of a fleet, read from a file every node is given.
pub struct Keyring {
    /// The id of the key that seals new secrets (the file's first).
    current: String,
    keys: HashMap<String, [u8; KEY_LEN]>,
}

/// A sealed secret, as stored: every binary field is base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Always `AES-256-GCM`.
    pub alg: String,
    /// The id of the master key that wrapped the data key.
    pub kid: String,
    /// The data key, encrypted under the master key: nonce, ciphertext, tag.
    pub wrapped_key: String,
    /// The secret, encrypted under the data key: nonce, ciphertext, tag.
    pub ciphertext: String,
}

impl Keyring {
    /// Reads a key file: one key per line, `ID HEX` (64 hex digits), `#`
    /// comments and blank lines ignored; the first key seals.
    pub fn load(path: &Path) -> anyhow::Result<Keyring> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the master key file {}", path.display()))?;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            log::warn!(
                "the master key file {} is mode {mode:o}: others can read it; 0600 is advised",
                path.display()
            );
        }
        Keyring::parse(&text).with_context(|| format!("the master key file {}", path.display()))
    }

    /// Parses a key file's text (see [`Keyring::load`]).
    pub fn parse(text: &str) -> anyhow::Result<Keyring> {
        let mut current = None;
        let mut keys = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, hex) = line
                .split_once(char::is_whitespace)
                .with_context(|| format!("line {}: expected `ID HEX`", n + 1))?;
            let key = parse_key(hex.trim()).with_context(|| format!("line {}", n + 1))?;
            if id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                bail!(
                    "line {}: a key id is up to 64 letters, digits, - _ or .",
                    n + 1
                );
            }
            if keys.insert(id.to_string(), key).is_some() {
                bail!("line {}: the key id {id:?} is listed twice", n + 1);
            }
            current.get_or_insert_with(|| id.to_string());
        }
        let current = current.context("no key: expected a line `ID HEX` (64 hex digits)")?;
        Ok(Keyring { current, keys })
    }

    /// The id of the key that seals new secrets.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// Seals `secret`, bound to `context` (the row it belongs to).
    pub fn seal(&self, secret: &[u8], context: &[u8]) -> anyhow::Result<Sealed> {
        let mut data_key = [0u8; KEY_LEN];
        boring::rand::rand_bytes(&mut data_key)?;
        let master = &self.keys[&self.current];
        Ok(Sealed {
            alg: ALGORITHM.into(),
            kid: self.current.clone(),
            wrapped_key: B64.encode(aead_seal(master, &data_key, self.current.as_bytes())?),
            ciphertext: B64.encode(aead_seal(&data_key, secret, context)?),
        })
    }

    /// Opens a sealed secret bound to `context`.
    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.alg != ALGORITHM {
            bail!("unknown algorithm {:?} (expected {ALGORITHM})", sealed.alg);
        }
        let master = self.keys.get(&sealed.kid).with_context(|| {
            format!(
                "sealed under master key {:?}, which the key file does not list",
                sealed.kid
            )
        })?;
        let wrapped = B64
            .decode(&sealed.wrapped_key)
            .context("wrapped_key is not base64")?;
        let data_key: [u8; KEY_LEN] = aead_open(master, &wrapped, sealed.kid.as_bytes())
            .context("the data key does not open under its master key")?
            .try_into()
            .map_err(|_| anyhow::anyhow!("the data key is not {KEY_LEN} bytes"))?;
        let ciphertext = B64
            .decode(&sealed.ciphertext)
            .context("ciphertext is not base64")?;
        aead_open(&data_key, &ciphertext, context)
            .context("the secret does not open (altered, or moved from another record)")
    }
}

fn parse_key(hex: &str) -> anyhow::Result<[u8; KEY_LEN]> {
    let bytes = hex.as_bytes();
    if bytes.len() != KEY_LEN * 2 {
        bail!("a key is {} hex digits, not {}", KEY_LEN * 2, bytes.len());
    }
    let mut key = [0u8; KEY_LEN];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok();
        key[i] = s
            .and_then(|s| u8::from_str_radix(s, 16).ok())
            .context("a key is hex digits only")?;
    }
    Ok(key)
}

/// nonce ‖ ciphertext ‖ tag.
fn aead_seal(key: &[u8; KEY_LEN], plain: &[u8], aad: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    boring::rand::rand_bytes(&mut nonce)?;
    let mut tag = [0u8; TAG_LEN];
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&nonce),
        aad,
        plain,
        &mut tag,
    )?;
    Ok([&nonce[..], &ct, &tag].concat())
}

fn aead_open(key: &[u8; KEY_LEN], sealed: &[u8], aad: &[u8]) -> anyhow::Result<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        bail!("too short to be sealed");
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    decrypt_aead(Cipher::aes_256_gcm(), key, Some(nonce), aad, ct, tag)
        .map_err(|_| anyhow::anyhow!("authentication failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "k2 ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_context() {
        let ring = Keyring::parse(K1).unwrap();
        let sealed = ring.seal(b"-----BEGIN PRIVATE KEY-----", b"cas/1").unwrap();
        assert_eq!(sealed.kid, "k1");
        assert!(!sealed.ciphertext.contains("BEGIN"));
        assert_eq!(
            ring.open(&sealed, b"cas/1").unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        let moved = ring.open(&sealed, b"cas/2").unwrap_err();
        assert!(format!("{moved:#}").contains("moved"), "{moved:#}");
        let mut altered = sealed.clone();
        altered.ciphertext = B64.encode(vec![0u8; 40]);
        assert!(ring.open(&altered, b"cas/1").is_err());
        let other = Keyring::parse(K2).unwrap();
        let e = other.open(&sealed, b"cas/1").unwrap_err();
        assert!(format!("{e:#}").contains("\"k1\""), "{e:#}");
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_opens_with_any() {
        let old = Keyring::parse(K1).unwrap();
        let sealed = old.seal(b"secret", b"row").unwrap();
        let rotated = Keyring::parse(&format!("# rotated\n{K2}\n\n{K1}\n")).unwrap();
        assert_eq!(rotated.current_id(), "k2");
        assert_eq!(rotated.open(&sealed, b"row").unwrap(), b"secret");
        assert_eq!(rotated.seal(b"x", b"row").unwrap().kid, "k2");
    }

    #[test]
    fn bad_key_files_are_refused_with_the_line() {
        for (text, says) in [
            ("", "no key"),
            ("k1", "line 1: expected"),
            ("k1 abcd", "64 hex digits"),
            (
                &format!("{K1}\n{K1}"),
                "line 2: the key id \"k1\" is listed twice",
            ),
            (&K1.replace("00", "zz"), "hex digits only"),
            (&K1.replace("k1", "k/1"), "a key id"),
        ] {
            let e = Keyring::parse(text).err().expect(text);
            assert!(format!("{e:#}").contains(says), "{text:?}: {e:#}");
        }
    }
}
