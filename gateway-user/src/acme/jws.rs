//! An ACME account key (ECDSA P-256) and the JSON Web Signatures (RFC 7515,
//! flattened serialization, `ES256`) every ACME request is sent in.

use anyhow::Context;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use boring::{
    bn::BigNumContext,
    ec::{EcGroup, EcKey},
    ecdsa::EcdsaSig,
    hash::MessageDigest,
    nid::Nid,
    pkey::Private,
};
use serde_json::{Value, json};

/// An account key.
pub struct AccountKey {
    key: EcKey<Private>,
}

/// Base64url without padding.
pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

impl AccountKey {
    /// A new P-256 key.
    pub fn generate() -> anyhow::Result<AccountKey> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        Ok(AccountKey {
            key: EcKey::generate(&group)?,
        })
    }

    /// A key from its PEM (as [`AccountKey::to_pem`] writes it).
    pub fn from_pem(pem: &str) -> anyhow::Result<AccountKey> {
        let key = EcKey::private_key_from_pem(pem.as_bytes()).context("not an EC private key")?;
        let p256 = key.group().curve_name() == Some(Nid::X9_62_PRIME256V1);
        anyhow::ensure!(p256, "an ACME account key must be P-256");
        Ok(AccountKey { key })
    }

    /// The key as PEM.
    pub fn to_pem(&self) -> anyhow::Result<String> {
        Ok(String::from_utf8(self.key.private_key_to_pem()?)?)
    }

    /// The public key as a JWK, members in the order RFC 7638 hashes them.
    pub fn jwk(&self) -> anyhow::Result<Value> {
        let mut ctx = BigNumContext::new()?;
        let mut x = boring::bn::BigNum::new()?;
        let mut y = boring::bn::BigNum::new()?;
        self.key
            .public_key()
            .affine_coordinates_gfp(self.key.group(), &mut x, &mut y, &mut ctx)?;
        Ok(json!({
            "crv": "P-256",
            "kty": "EC",
            "x": b64(&x.to_vec_padded(32)?),
            "y": b64(&y.to_vec_padded(32)?),
        }))
    }

    /// The JWK thumbprint (RFC 7638), base64url.
    pub fn thumbprint(&self) -> anyhow::Result<String> {
        let jwk = self.jwk()?;
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap_or_default(),
            jwk["y"].as_str().unwrap_or_default()
        );
        let digest = boring::hash::hash(MessageDigest::sha256(), canonical.as_bytes())?;
        Ok(b64(&digest))
    }

    /// The key authorization of a challenge token (RFC 8555 §8.1).
    pub fn key_authorization(&self, token: &str) -> anyhow::Result<String> {
        Ok(format!("{token}.{}", self.thumbprint()?))
    }

    /// A signed request body: `payload` (none: POST-as-GET, an empty payload)
    /// to `url`, identified by the account URL `kid` or, without one, by the
    /// JWK itself (account creation).
    pub fn sign(
        &self,
        url: &str,
        nonce: &str,
        kid: Option<&str>,
        payload: Option<&Value>,
    ) -> anyhow::Result<Vec<u8>> {
        let mut protected = json!({ "alg": "ES256", "nonce": nonce, "url": url });
        match kid {
            Some(kid) => protected["kid"] = json!(kid),
            None => protected["jwk"] = self.jwk()?,
        }
        let protected = b64(serde_json::to_string(&protected)?.as_bytes());
        let payload = match payload {
            Some(p) => b64(serde_json::to_string(p)?.as_bytes()),
            None => String::new(),
        };
        let input = format!("{protected}.{payload}");
        let digest = boring::hash::hash(MessageDigest::sha256(), input.as_bytes())?;
        let sig = EcdsaSig::sign(&digest, &self.key)?;
        let mut raw = sig.r().to_vec_padded(32)?;
        raw.extend_from_slice(&sig.s().to_vec_padded(32)?);
        let body = json!({ "protected": protected, "payload": payload, "signature": b64(&raw) });
        Ok(serde_json::to_vec(&body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_the_key_round_trips() {
        let key = AccountKey::generate().unwrap();
        let body = key
            .sign("https://a/b", "n1", None, Some(&json!({"x": 1})))
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let input = format!(
            "{}.{}",
            body["protected"].as_str().unwrap(),
            body["payload"].as_str().unwrap()
        );
        let raw = URL_SAFE_NO_PAD
            .decode(body["signature"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw.len(), 64);
        let r = boring::bn::BigNum::from_slice(&raw[..32]).unwrap();
        let s = boring::bn::BigNum::from_slice(&raw[32..]).unwrap();
        let sig = EcdsaSig::from_private_components(r, s).unwrap();
        let digest = boring::hash::hash(MessageDigest::sha256(), input.as_bytes()).unwrap();
        assert!(sig.verify(&digest, &key.key).unwrap());
        let again = AccountKey::from_pem(&key.to_pem().unwrap()).unwrap();
        assert_eq!(again.thumbprint().unwrap(), key.thumbprint().unwrap());
    }
}
