//! The edge's configuration, as `wasi:config/store` keys.
//!
//! On Spin these are component variables (`[component.<id>.variables]` in `spin.toml`), whose
//! names may hold only lower-case letters, digits and underscores; deskgate's host takes them from
//! `deskgate edge --config-var KEY=VALUE` (or `--config-file`). A connection id becomes part of a
//! key with `-` written as `_`, so edge-served connection ids are lower-case letters, digits, `-`
//! and `_` ([`valid_connection_id`]), and `zd-main` and `zd_main` would share keys (do not use both).
//!
//! | key | meaning |
//! |---|---|
//! | [`CORE_URL`] | the core gateway's base URL, e.g. `https://deskgate.internal:8080` |
//! | [`CORE_TOKEN`] | the core's edge ingest token (`DESKGATE_EDGE_TOKEN` on the core) |
//! | `conn_{id}_platform` ([`platform`]) | the connection's platform (`zendesk`, ...); a connection without one is unknown here |
//! | `conn_{id}_secret` ([`secret`]) | its webhook signing secret (the Freshdesk header token) |
//! | `conn_{id}_allow_unsigned` ([`allow_unsigned`]) | `true` to accept deliveries without any signature |

/// Key of the core gateway's base URL.
pub const CORE_URL: &str = "core_url";
/// Key of the core's edge ingest token.
pub const CORE_TOKEN: &str = "core_token";

/// Whether `id` can be served by the edge: 1 to 64 of `a-z`, `0-9`, `-`, `_`.
pub fn valid_connection_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn conn_key(id: &str, field: &str) -> String {
    format!("conn_{}_{field}", id.replace('-', "_"))
}

/// Key of a connection's platform.
pub fn platform(id: &str) -> String {
    conn_key(id, "platform")
}

/// Key of a connection's webhook secret.
pub fn secret(id: &str) -> String {
    conn_key(id, "secret")
}

/// Key of a connection's "accept unsigned deliveries" flag.
pub fn allow_unsigned(id: &str) -> String {
    conn_key(id, "allow_unsigned")
}

/// Read a boolean setting: `true`/`false` (any case), `1`/`0`, `yes`/`no`; absent is false.
///
/// # Errors
/// A message naming the key and the accepted values.
pub fn parse_bool(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v.is_empty() || v == "false" || v == "0" || v == "no" => Ok(false),
        Some(v) if v == "true" || v == "1" || v == "yes" => Ok(true),
        Some(v) => Err(format!("`{key}` is {v:?}: set it to true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spin_variable_names() {
        assert_eq!(platform("zd-main"), "conn_zd_main_platform");
        assert_eq!(secret("ic"), "conn_ic_secret");
        assert_eq!(allow_unsigned("fd_2"), "conn_fd_2_allow_unsigned");
        for k in [platform("a-b-c"), secret("x1"), CORE_URL.into(), CORE_TOKEN.into()] {
            assert!(k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{k}");
        }
        assert!(valid_connection_id("zd-main_2"));
        assert!(!valid_connection_id(""));
        assert!(!valid_connection_id("ZD"));
        assert!(!valid_connection_id("a b"));
        assert!(!valid_connection_id(&"a".repeat(65)));
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("k", None), Ok(false));
        assert_eq!(parse_bool("k", Some(" TRUE ")), Ok(true));
        assert_eq!(parse_bool("k", Some("0")), Ok(false));
        let e = parse_bool("conn_x_allow_unsigned", Some("maybe")).unwrap_err();
        assert!(e.contains("conn_x_allow_unsigned") && e.contains("true or false"), "{e}");
    }
}
