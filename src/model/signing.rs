//! Bundle signatures (ed25519): the clinic signs a model announcement (every field a device
//! acts on: name, version, URL, archive sha256, target, expiry; see `device::update`) with its
//! private key, devices check it with the public key from their config. The only file that
//! imports ed25519-dalek.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0}")]
    Key(String),
    #[error("signature does not match: not signed by this key, or a signed field was changed")]
    BadSignature,
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A new key pair: (private key hex, public key hex).
pub fn keygen() -> Result<(String, String), SignError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| SignError::Key(format!("no randomness: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    Ok((
        hex::encode(key.to_bytes()),
        hex::encode(key.verifying_key().to_bytes()),
    ))
}

fn key32(hex_str: &str, what: &str) -> Result<[u8; 32], SignError> {
    hex::decode(hex_str.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| SignError::Key(format!("{what}: expected 64 hex digits")))
}

/// Read a private key file written by `dermcam bundle keygen`.
pub fn read_private_key(path: &Path) -> Result<String, SignError> {
    crate::storage::read_small_text(path, crate::storage::MAX_CONFIG_FILE_BYTES).map_err(|source| {
        SignError::Io {
            path: path.into(),
            source,
        }
    })
}

/// The public key (hex) of a private key (hex).
pub fn public_of(private_hex: &str) -> Result<String, SignError> {
    let key = SigningKey::from_bytes(&key32(private_hex, "private key")?);
    Ok(hex::encode(key.verifying_key().to_bytes()))
}

/// Sign `message` (callers put a fixed context string first, so a signature made for one
/// purpose never passes for another): the signature, hex.
pub fn sign(private_hex: &str, message: &[u8]) -> Result<String, SignError> {
    let key = SigningKey::from_bytes(&key32(private_hex, "private key")?);
    Ok(hex::encode(key.sign(message).to_bytes()))
}

/// Check a signature (hex) of `message` against a public key (hex).
pub fn verify(public_hex: &str, message: &[u8], signature_hex: &str) -> Result<(), SignError> {
    let key = VerifyingKey::from_bytes(&key32(public_hex, "public key")?)
        .map_err(|e| SignError::Key(format!("public key: {e}")))?;
    let sig = hex::decode(signature_hex.trim())
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or_else(|| SignError::Key("signature: expected 128 hex digits".into()))?;
    key.verify_strict(message, &sig)
        .map_err(|_| SignError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refusals() {
        let (sk, pk) = keygen().unwrap();
        assert_eq!(public_of(&sk).unwrap(), pk);
        let sha = "ab".repeat(32);
        let sha = sha.as_bytes();
        let sig = sign(&sk, sha).unwrap();
        verify(&pk, sha, &sig).unwrap();
        // Another message, another key, a damaged signature: all refused.
        assert!(matches!(
            verify(&pk, "cd".repeat(32).as_bytes(), &sig),
            Err(SignError::BadSignature)
        ));
        let (_, other) = keygen().unwrap();
        assert!(matches!(
            verify(&other, sha, &sig),
            Err(SignError::BadSignature)
        ));
        let mut bad = sig.clone().into_bytes();
        bad[10] = if bad[10] == b'0' { b'1' } else { b'0' };
        assert!(verify(&pk, sha, std::str::from_utf8(&bad).unwrap()).is_err());
        assert!(verify(&pk, sha, "zz").is_err());
    }
}
