//! Small pure helpers shared by the platform modules: RFC 3339 time formatting and parsing (no
//! calendar crate needed for UTC), query-string decoding, Basic/Bearer header parsing and id
//! formatting. Nothing here knows about any platform.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2024-01-01T00:00:00Z` for a unix time in milliseconds (sub-second part dropped, as the
/// platforms do in their JSON).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fff]]` with `Z`, `±HH:MM` or no zone (UTC), and
/// returns unix milliseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, mo, d) * 86_400_000;
    if b.len() == 10 {
        return Some(ms);
    }
    if b[10] != b'T' && b[10] != b' ' && b[10] != b't' {
        return None;
    }
    let h = num(11..13)?;
    if b.get(13) != Some(&b':') {
        return None;
    }
    let mi = num(14..16)?;
    let mut i = 16;
    let mut sec = 0;
    if b.get(16) == Some(&b':') {
        sec = num(17..19)?;
        i = 19;
        if b.get(19) == Some(&b'.') {
            i = 20;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    ms += (h * 3600 + mi * 60 + sec) * 1000;
    match &s[i..] {
        "" | "Z" | "z" => Some(ms),
        zone if zone.len() == 6 && (zone.starts_with('+') || zone.starts_with('-')) => {
            let zh: i64 = zone[1..3].parse().ok()?;
            let zm: i64 = zone[4..6].parse().ok()?;
            let off = (zh * 3600 + zm * 60) * 1000;
            Some(if zone.starts_with('+') {
                ms - off
            } else {
                ms + off
            })
        }
        _ => None,
    }
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
pub fn form_decode(s: &str) -> String {
    let replaced;
    let s = if s.contains('+') {
        replaced = s.replace('+', " ");
        replaced.as_str()
    } else {
        s
    };
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Percent-encodes a query-string value.
pub fn form_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// A decoded query string (or form body), in order, duplicates kept.
#[derive(Debug, Default, Clone)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// Parses `a=1&b=x+y`.
    pub fn parse(q: &str) -> Query {
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (form_decode(k), form_decode(v)),
                    None => (form_decode(p), String::new()),
                })
                .collect(),
        )
    }
    /// First value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What an `Authorization` header carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthHeader {
    /// No header at all.
    Missing,
    /// `Basic` with the decoded user and password.
    Basic(String, String),
    /// `Bearer <token>`.
    Bearer(String),
    /// Anything else (bad base64, unknown scheme, no colon).
    Malformed,
}

/// Parses an `Authorization` header value.
pub fn parse_auth(value: Option<&[u8]>) -> AuthHeader {
    let Some(v) = value else {
        return AuthHeader::Missing;
    };
    let Ok(v) = std::str::from_utf8(v) else {
        return AuthHeader::Malformed;
    };
    let v = v.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(raw) = B64.decode(rest) else {
            return AuthHeader::Malformed;
        };
        let Ok(text) = String::from_utf8(raw) else {
            return AuthHeader::Malformed;
        };
        match text.split_once(':') {
            Some((u, p)) => AuthHeader::Basic(u.to_owned(), p.to_owned()),
            None => AuthHeader::Malformed,
        }
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        AuthHeader::Bearer(rest.to_owned())
    } else {
        AuthHeader::Malformed
    }
}

/// `Basic base64(user:pass)` header value.
pub fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", B64.encode(format!("{user}:{pass}")))
}

/// A uuid-looking string derived from a number (deterministic, so seeded runs replay exactly).
pub fn uuidish(n: u64) -> String {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x005E_ED0F_DE5C_6A7E;
    let l = h.rotate_left(29).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) as u16,
        (h & 0xfff) as u16,
        (l >> 52) as u16 & 0xfff,
        l & 0xffff_ffff_ffff
    )
}

/// Plain text to the minimal HTML the platforms wrap bodies in.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Crude HTML-to-text: drops tags and unescapes the five basic entities.
pub fn strip_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_200_000), "2024-01-01T00:00:00Z");
        assert_eq!(parse_time("2024-01-01T00:00:00Z"), Some(1_704_067_200_000));
        assert_eq!(parse_time("2024-01-01"), Some(1_704_067_200_000));
        assert_eq!(
            parse_time("2024-01-01T01:00:00+01:00"),
            Some(1_704_067_200_000)
        );
        assert_eq!(parse_time("2024-02-30x"), None);
        let t = 1_717_171_717_000;
        assert_eq!(parse_time(&rfc3339(t)), Some(t));
    }

    #[test]
    fn auth_and_query() {
        assert_eq!(
            parse_auth(Some(basic("a@b.c/token", "xyz").as_bytes())),
            AuthHeader::Basic("a@b.c/token".into(), "xyz".into())
        );
        assert_eq!(
            parse_auth(Some(b"Bearer t1")),
            AuthHeader::Bearer("t1".into())
        );
        let q = Query::parse("query=type%3Aticket+status%3Copen&page=2");
        assert_eq!(q.get("query"), Some("type:ticket status<open"));
        assert_eq!(q.get("page"), Some("2"));
    }
}
