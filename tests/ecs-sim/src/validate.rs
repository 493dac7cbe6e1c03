//! The §3 validation rules for names, descriptions, tags and client tokens.

use std::collections::HashSet;

use crate::error::ApiError;

/// Categories CreateSnapshotGroup accepts (ESSD family, incl. finance-cloud
/// XC, and Regional ESSD: alibaba-api.md §0 item 7).
pub const SUPPORTED_CATEGORIES: &[&str] = &[
    "cloud_essd",
    "cloud_auto",
    "cloud_essd_entry",
    "cloud_essd_xc0",
    "cloud_essd_xc1",
    REGIONAL_ESSD,
];

/// Regional ESSD: accepted in a group only together with its own kind.
pub const REGIONAL_ESSD: &str = "cloud_regional_disk_auto";

fn starts_http(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Name: 2..=128 chars, starts with a letter or CJK character, then letters,
/// digits, CJK, `. _ - :`; not `http(s)://`.
pub fn name(n: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::new(
            400,
            "InvalidParameter.Name",
            format!("The specified Name {n:?} is invalid: 2-128 characters, starting with a letter, containing letters, digits, '.', '_', '-' or ':'."),
        )
    };
    let len = n.chars().count();
    if !(2..=128).contains(&len) || starts_http(n) {
        return Err(bad());
    }
    let mut chars = n.chars();
    let first = chars.next().ok_or_else(bad)?;
    if !(first.is_ascii_alphabetic() || is_cjk(first)) {
        return Err(bad());
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || is_cjk(c) || matches!(c, '.' | '_' | '-' | ':'))
    {
        return Err(bad());
    }
    Ok(())
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// Description: 2..=256 chars, not `http(s)://`.
pub fn description(d: &str) -> Result<(), ApiError> {
    let len = d.chars().count();
    if !(2..=256).contains(&len) || starts_http(d) {
        return Err(ApiError::new(
            404,
            "InvalidDescription.Malformed",
            "The specified description is wrongly formed.",
        ));
    }
    Ok(())
}

/// Tags: 1..=20, keys non-empty, ≤128, no `aliyun`/`acs:` prefix, no URL;
/// values ≤128, may be empty, no `acs:` prefix; no duplicate keys.
pub fn tags(tags: &[(String, Option<String>)]) -> Result<Vec<(String, String)>, ApiError> {
    if tags.len() > 20 {
        return Err(ApiError::new(
            403,
            "QuotaExceed.Tags",
            "The maximum number of tags is exceeded (20).",
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (k, v) in tags {
        if k.is_empty()
            || k.chars().count() > 128
            || k.starts_with("aliyun")
            || k.starts_with("acs:")
            || k.contains("http://")
            || k.contains("https://")
        {
            return Err(ApiError::new(
                400,
                "InvalidTagKey.Malformed",
                "The specified Tag.n.Key is not valid.",
            ));
        }
        let v = v.clone().unwrap_or_default();
        if v.chars().count() > 128 || v.starts_with("acs:") {
            return Err(ApiError::new(
                400,
                "InvalidTagValue.Malformed",
                "The specified Tag.n.Value is not valid.",
            ));
        }
        if !seen.insert(k.clone()) {
            return Err(ApiError::new(
                400,
                "Duplicate.TagKey",
                "The Tag.N.Key contain duplicate key.",
            ));
        }
        out.push((k.clone(), v));
    }
    Ok(out)
}

/// ClientToken: 1..=64 ASCII characters.
pub fn client_token(t: &str) -> Result<(), ApiError> {
    if t.is_empty() || t.len() > 64 || !t.is_ascii() {
        return Err(ApiError::new(
            400,
            "InvalidClientToken.Malformed",
            "The specified ClientToken is invalid: at most 64 ASCII characters.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "ab",
            "appsnap-mysql-2025-01-02T03:04:05Z",
            "备份",
            "a.b_c-d:e",
        ] {
            assert!(name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in [
            "a",
            "1ab",
            "-ab",
            "http://x",
            "https://x",
            "a b",
            "a/b",
            long.as_str(),
        ] {
            assert!(name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn descriptions_and_tokens() {
        assert!(description("ok").is_ok());
        assert!(description("x").is_err());
        assert!(description(&"d".repeat(257)).is_err());
        assert!(client_token(&"t".repeat(64)).is_ok());
        assert!(client_token(&"t".repeat(65)).is_err());
        assert!(client_token("ü").is_err());
    }
}
