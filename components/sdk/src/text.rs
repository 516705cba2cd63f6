//! Text and time helpers shared by adapters.
//!
//! Read-back compares what the app asked to post with what the platform stores, and platforms
//! store replies differently (Zendesk keeps plain text and HTML, Freshdesk and Intercom keep HTML).
//! [`same_text`] compares the visible text, ignoring markup and whitespace.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The visible text of an HTML or plain-text body: tags removed, the common entities decoded and
/// runs of whitespace collapsed to one space.
pub fn visible_text(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut in_tag = false;
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '<' => {
                in_tag = true;
                // Block-level breaks separate words.
                out.push(' ');
            }
            '>' if in_tag => in_tag = false,
            _ if in_tag => {}
            '&' => {
                let mut entity = String::new();
                while let Some(&n) = chars.peek() {
                    if n == ';' || entity.len() > 8 {
                        break;
                    }
                    entity.push(n);
                    chars.next();
                }
                let decoded = match entity.as_str() {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "#39" | "apos" => Some('\''),
                    "nbsp" => Some(' '),
                    _ => None,
                };
                match (decoded, chars.peek()) {
                    (Some(d), Some(';')) => {
                        chars.next();
                        out.push(d);
                    }
                    _ => {
                        out.push('&');
                        out.push_str(&entity);
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `body` shows any text at all: `!visible_text(body).is_empty()`, without building
/// the text when the body holds no markup or entity (the common case of a plain-text reply).
pub fn has_visible_text(body: &str) -> bool {
    if !body.bytes().any(|b| b == b'<' || b == b'&') {
        return body.split_whitespace().next().is_some();
    }
    !visible_text(body).is_empty()
}

/// Whether two bodies show the same text.
pub fn same_text(a: &str, b: &str) -> bool {
    visible_text(a) == visible_text(b)
}

/// Escape text for an HTML body (Freshdesk and Intercom take HTML).
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Parse an RFC 3339 timestamp ("2024-04-17T17:18:10Z") into milliseconds since the Unix epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Format milliseconds since the Unix epoch as RFC 3339 in UTC, to the second ("2024-04-17T17:18:10Z").
pub fn format_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_visible_text_agrees_with_visible_text() {
        for body in [
            "", " ", "\n\t ", "x", "  hello  ", "<p></p>", "<p> </p>", "<p>x</p>", "&nbsp;",
            "&nbsp; &nbsp;", "&amp;", "a & b", "<br/>", "\u{a0}", "\u{2003}x", "&unknown;",
        ] {
            assert_eq!(has_visible_text(body), !visible_text(body).is_empty(), "{body:?}");
        }
    }

    #[test]
    fn markup_and_whitespace_do_not_matter() {
        assert!(same_text("<p>Thanks,  fixed.</p>", "Thanks, fixed."));
        assert!(same_text("a &amp; b", "a & b"));
        assert!(!same_text("<p>Thanks</p>", "Thanks!"));
        assert_eq!(visible_text("<p>one</p><p>two</p>"), "one two");
        assert_eq!(visible_text("AT&T rocks"), "AT&T rocks");
    }

    #[test]
    fn escape_round_trips_through_visible_text() {
        let s = "if a < b && c > d \"quoted\"";
        assert_eq!(visible_text(&html_escape(s)), s);
    }

    #[test]
    fn rfc3339_round_trip() {
        let ms = parse_rfc3339_ms("2024-04-17T17:18:10Z").unwrap();
        assert_eq!(ms, 1_713_374_290_000);
        assert_eq!(format_rfc3339(ms), "2024-04-17T17:18:10Z");
        assert_eq!(parse_rfc3339_ms("2024-04-17T19:18:10+02:00"), Some(ms));
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
