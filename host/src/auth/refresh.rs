//! The OAuth 2 refresh request (RFC 6749 §6), built by the host: the adapter never sees a secret.

use std::time::Duration;

/// The OAuth client a connection's tokens were issued to.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthClient {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: String,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient").field("client_id", &self.client_id).field("client_secret", &"<redacted>").finish()
    }
}

/// A token endpoint's successful answer.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenPair {
    /// The new access token.
    pub access_token: String,
    /// The new refresh token (rotating platforms always send one; the old one is dead).
    pub refresh_token: Option<String>,
    /// Lifetime of the access token, seconds, if the endpoint said.
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// Why a refresh did not produce a pair.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The platform refused for good (`invalid_grant`: revoked, expired or spent refresh token;
    /// `invalid_client`): only a person re-authenticating can fix it.
    #[error("the token endpoint refused the refresh ({code}): {message}; re-authenticate the connection")]
    Definitive {
        /// The OAuth error code.
        code: String,
        /// The platform's description.
        message: String,
    },
    /// 5xx, 429 or a network failure: worth retrying while the access token still lives.
    #[error("the refresh failed transiently: {0}")]
    Transient(String),
}

impl RefreshError {
    /// Whether retrying cannot help.
    pub fn is_definitive(&self) -> bool {
        matches!(self, Self::Definitive { .. })
    }
}

/// Classify a token endpoint's non-2xx answer.
pub fn classify(status: u16, body: &[u8]) -> RefreshError {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = v.get("error").and_then(|e| e.as_str()).unwrap_or("").to_string();
    let message = v
        .get("error_description")
        .and_then(|e| e.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    if status >= 500 || status == 429 || status == 408 {
        return RefreshError::Transient(format!("HTTP {status}: {message}"));
    }
    let code = if code.is_empty() { format!("http_{status}") } else { code };
    // Any other 4xx (invalid_grant, invalid_client, unauthorized_client, invalid_scope, ...)
    // will be refused again the same way: retrying only delays the alert.
    RefreshError::Definitive { code, message }
}

/// Send the refresh request: `POST {base_url}{token_path}`, form-encoded
/// `grant_type=refresh_token&refresh_token=..&client_id=..&client_secret=..`.
///
/// # Errors
/// [`RefreshError`], classified.
pub async fn refresh(
    http: &reqwest::Client,
    base_url: &str,
    token_path: &str,
    client: &OAuthClient,
    refresh_token: &str,
) -> Result<TokenPair, RefreshError> {
    let url = format!("{}{}", base_url.trim_end_matches('/'), token_path);
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", client.client_id.as_str()),
        ("client_secret", client.client_secret.as_str()),
    ];
    let resp = http
        .post(&url)
        .header("accept", "application/json")
        .form(&form)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| RefreshError::Transient(format!("{e:#}")))?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(|e| RefreshError::Transient(format!("{e:#}")))?;
    if !(200..300).contains(&status) {
        return Err(classify(status, &body));
    }
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| RefreshError::Transient(format!("the token endpoint's answer is not JSON: {e}")))?;
    let access_token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| RefreshError::Transient("the token endpoint's answer has no access_token".into()))?
        .to_string();
    Ok(TokenPair {
        access_token,
        refresh_token: v.get("refresh_token").and_then(|t| t.as_str()).map(str::to_string),
        expires_in: v.get("expires_in").and_then(|t| t.as_u64()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let e = classify(400, br#"{"error":"invalid_grant","error_description":"revoked"}"#);
        assert_eq!(e, RefreshError::Definitive { code: "invalid_grant".into(), message: "revoked".into() });
        assert!(classify(401, br#"{"error":"invalid_client"}"#).is_definitive());
        assert!(!classify(503, b"busy").is_definitive());
        assert!(!classify(429, b"").is_definitive());
    }
}
