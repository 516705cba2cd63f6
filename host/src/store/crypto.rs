//! Credentials encrypted at rest.
//!
//! XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) with the caller's 32-byte key. Its 24-byte
//! nonce is drawn at random for every write: at that size random nonces never realistically
//! collide, which 12-byte AES-GCM / ChaCha20 nonces would start to do after a few billion writes
//! under one key. The connection id is bound in as associated data, so a sealed blob copied onto
//! another connection's row does not decrypt; webhook signing secrets are bound to their own
//! associated data (`deskgate:webhook-secret:` and the id), so they cannot be swapped with
//! credentials either.
//!
//! Blob layout: `version byte (1) || nonce (24) || ciphertext + tag (16)`.
//!
//! The key is never stored. A check value sealed with it is (in `deskgate_meta`), so a wrong key
//! is reported when the store opens, not at 2 am when a token needs refreshing.

use std::fmt;

use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::StoreError;

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const KEY_CHECK_PLAINTEXT: &[u8] = b"deskgate store key check v1";
const KEY_CHECK_AAD: &[u8] = b"deskgate:key-check";

/// The 32-byte key that encrypts credentials at rest. Its `Debug` never prints it.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A key from 64 hex digits or from standard base64 of 32 bytes (as `openssl rand -hex 32`
    /// or `openssl rand -base64 32` print).
    ///
    /// # Errors
    /// A message saying what shape was expected; it never echoes the input.
    pub fn parse(text: &str) -> Result<Self, String> {
        use base64::Engine as _;
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| "not valid hex".to_string())?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| "expected 64 hex digits or base64 of 32 bytes".to_string())?
        };
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("the key must be 32 bytes, this one is {}", b.len()))?;
        Ok(Self(arr))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Encrypt `plaintext` bound to `aad`.
pub(crate) fn seal(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce = XNonce::generate();
    let ct = key
        .cipher()
        .encrypt(&nonce, Payload { msg: plaintext, aad })
        .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Decrypt a blob from [`seal`]. A blob that fails authentication was written with another key
/// (or tampered with, which we cannot tell apart): [`StoreError::WrongSecretKey`].
pub(crate) fn unseal(key: &SecretKey, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>, StoreError> {
    match blob.split_first() {
        Some((&FORMAT_V1, rest)) if rest.len() >= NONCE_LEN + 16 => {
            let (nonce, ct) = rest.split_at(NONCE_LEN);
            let nonce = XNonce::try_from(nonce).expect("length checked above");
            key.cipher()
                .decrypt(&nonce, Payload { msg: ct, aad })
                .map_err(|_| StoreError::WrongSecretKey)
        }
        Some((v, _)) => Err(StoreError::Corrupt(format!(
            "sealed credential has unknown format {v} or is truncated ({} bytes)",
            blob.len()
        ))),
        None => Err(StoreError::Corrupt("sealed credential is empty".into())),
    }
}

/// Associated data for a connection's credential blob.
pub(crate) fn credential_aad(connection_id: &str) -> Vec<u8> {
    let mut aad = b"deskgate:credential:".to_vec();
    aad.extend_from_slice(connection_id.as_bytes());
    aad
}

/// Associated data for a connection's webhook signing secret: distinct from
/// [`credential_aad`]'s, so neither blob decrypts in the other's place.
pub(crate) fn webhook_secret_aad(connection_id: &str) -> Vec<u8> {
    let mut aad = b"deskgate:webhook-secret:".to_vec();
    aad.extend_from_slice(connection_id.as_bytes());
    aad
}

/// A fresh key-check value for this key.
pub(crate) fn key_check(key: &SecretKey) -> Vec<u8> {
    seal(key, KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)
}

/// Whether `stored` was sealed with `key`.
pub(crate) fn verify_key_check(key: &SecretKey, stored: &[u8]) -> Result<(), StoreError> {
    match unseal(key, KEY_CHECK_AAD, stored)? {
        p if p == KEY_CHECK_PLAINTEXT => Ok(()),
        _ => Err(StoreError::WrongSecretKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fresh_nonces() {
        let k = SecretKey::from_bytes([1; 32]);
        let a = seal(&k, b"aad", b"hello");
        let b = seal(&k, b"aad", b"hello");
        assert_ne!(a, b, "every write draws a new nonce");
        assert_eq!(unseal(&k, b"aad", &a).unwrap(), b"hello");
        assert!(matches!(unseal(&k, b"other", &a), Err(StoreError::WrongSecretKey)));
        assert!(matches!(
            unseal(&SecretKey::from_bytes([2; 32]), b"aad", &a),
            Err(StoreError::WrongSecretKey)
        ));
        assert!(matches!(unseal(&k, b"aad", &[9, 9]), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn key_check_detects_another_key() {
        let k = SecretKey::from_bytes([1; 32]);
        let check = key_check(&k);
        verify_key_check(&k, &check).unwrap();
        assert!(matches!(
            verify_key_check(&SecretKey::from_bytes([3; 32]), &check),
            Err(StoreError::WrongSecretKey)
        ));
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let hex_key = "00".repeat(31) + "ff";
        assert_eq!(SecretKey::parse(&hex_key).unwrap().0[31], 0xff);
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
        assert_eq!(SecretKey::parse(&b64).unwrap().0, [7; 32]);
        let err = SecretKey::parse("c2hvcnQ=").unwrap_err();
        assert!(err.contains("32 bytes"), "{err}");
        assert!(!format!("{:?}", SecretKey::from_bytes([7; 32])).contains('7'));
    }
}
