//! ECS naming rules that the policy must satisfy before a request is ever
//! built (reference: CreateSnapshotGroup, §3.1 of the API notes), so a bad
//! name fails at `check` time rather than at 02:30 with file systems frozen.

/// Length of the suffix appended to a job name to form a group name:
/// `-` + `YYYYmmddTHHMMSSZ`.
pub const GROUP_NAME_SUFFIX_LEN: usize = 17;
/// ECS limit for a snapshot group Name.
pub const GROUP_NAME_MAX: usize = 128;
/// Longest job name that still yields a valid group name.
pub const JOB_NAME_MAX: usize = GROUP_NAME_MAX - GROUP_NAME_SUFFIX_LEN;
/// ECS allows 20 tags per request; appsnap adds three to every group it
/// creates (`appsnap:job` or `appsnap:plugin`, `appsnap:instance`,
/// `appsnap:owner`), so 17 are left for the job's own.
pub const MAX_USER_TAGS: usize = 17;
/// Tag keys appsnap writes itself; a user tag may not shadow them.
pub const RESERVED_TAG_KEYS: [&str; 2] = ["AppConsistent", "FsConsistent"];
/// Prefix of appsnap's own tag keys.
pub const RESERVED_TAG_PREFIX: &str = "appsnap:";

/// `[A-Za-z][A-Za-z0-9._:-]{1,110}`: ECS's group-name rule, capped at
/// [`JOB_NAME_MAX`] so `<name>-<timestamp>` fits ECS's 128. Both messages
/// state that cap, the limit that is actually enforced.
pub fn check_job_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if !first_ok || !rest_ok || name.len() < 2 {
        return Err(format!(
            "name {name:?}: must be 2-{JOB_NAME_MAX} characters: a letter, then letters, digits, '.', '_', ':' or '-'"
        ));
    }
    if name.len() > JOB_NAME_MAX {
        return Err(format!(
            "name {name:?}: is {} characters; at most {JOB_NAME_MAX} so that the snapshot group name \"<name>-<UTC timestamp>\" fits ECS's {GROUP_NAME_MAX}",
            name.len()
        ));
    }
    Ok(())
}

/// A snapshot group Name by ECS's rule: 2-128 characters, starting with a
/// letter (Chinese characters count), then letters, digits, `.`, `_`, `-`,
/// `:`; so never a URL, a path or a control character.
pub fn check_group_name(v: &str) -> Result<(), String> {
    let mut chars = v.chars();
    let first = chars.next().is_some_and(|c| c.is_alphabetic());
    let rest = chars.all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    let n = v.chars().count();
    if !(2..=GROUP_NAME_MAX).contains(&n) || !first || !rest {
        return Err("must be 2-128 characters, start with a letter, and contain only letters, digits, '.', '_', '-', ':'".into());
    }
    Ok(())
}

/// A RAM role name: 1-64 of letters, digits, `.`, `-`, `_` (RAM's rule). It
/// goes into the metadata service's URL path, so nothing else may pass.
pub fn check_ram_role_name(s: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err("must be 1-64 letters, digits, '.', '-' or '_'".to_string())
    }
}

/// Description: 2-256 characters, not a URL.
pub fn check_description(d: &str) -> Result<(), String> {
    let n = d.chars().count();
    if !(2..=256).contains(&n) {
        return Err(format!("description: must be 2-256 characters, got {n}"));
    }
    if d.starts_with("http://") || d.starts_with("https://") {
        return Err("description: must not start with http:// or https://".to_string());
    }
    Ok(())
}

/// One user tag, by the ECS rules plus appsnap's reserved keys.
pub fn check_tag(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.chars().count() > 128 {
        return Err(format!("tag key {key:?}: must be 1-128 characters"));
    }
    if key.starts_with("aliyun") || key.starts_with("acs:") {
        return Err(format!(
            "tag key {key:?}: must not start with \"aliyun\" or \"acs:\" (reserved by Alibaba Cloud)"
        ));
    }
    if key.contains("http://") || key.contains("https://") {
        return Err(format!(
            "tag key {key:?}: must not contain http:// or https://"
        ));
    }
    if key.starts_with(RESERVED_TAG_PREFIX) || RESERVED_TAG_KEYS.contains(&key) {
        return Err(format!(
            "tag key {key:?}: is set by appsnap itself (keys starting with \"appsnap:\", AppConsistent, FsConsistent)"
        ));
    }
    if value.chars().count() > 128 {
        return Err(format!("tag {key:?}: value must be at most 128 characters"));
    }
    if value.starts_with("acs:") {
        return Err(format!("tag {key:?}: value must not start with \"acs:\""));
    }
    Ok(())
}

/// Prefixes `script_env` may never name: the credentials appsnap signs with
/// (`ALIBABA_CLOUD_ACCESS_KEY_SECRET`, `..._SECURITY_TOKEN`, ...), the
/// variables appsnap itself sets, and systemd's sockets, which are the daemon's.
pub const SCRIPT_ENV_FORBIDDEN: [&str; 5] = [
    "ALIBABA_CLOUD_",
    "APPSNAP_",
    "NOTIFY_SOCKET",
    "WATCHDOG_",
    "LISTEN_",
];

/// One `script_env` name: a portable variable name (`[A-Za-z_][A-Za-z0-9_]*`,
/// at most 128 bytes) outside [`SCRIPT_ENV_FORBIDDEN`].
pub fn check_script_env(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let portable = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128;
    if !portable {
        return Err(format!(
            "script_env: {name:?} is not a variable name (letters, digits and _, not starting with a digit, at most 128)"
        ));
    }
    let upper = name.to_ascii_uppercase();
    if let Some(p) = SCRIPT_ENV_FORBIDDEN.iter().find(|p| upper.starts_with(*p)) {
        return Err(format!(
            "script_env: {name:?} may not be passed to scripts ({p}* holds appsnap's credentials, its own variables or systemd's sockets)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names() {
        assert!(check_job_name("mysql").is_ok());
        assert!(check_job_name("db.prod:1_a-b").is_ok());
        assert!(check_job_name("m").is_err());
        assert!(check_job_name("1mysql").is_err());
        assert!(check_job_name("my sql").is_err());
        assert!(check_job_name(&"a".repeat(JOB_NAME_MAX)).is_ok());
        assert!(check_job_name(&"a".repeat(JOB_NAME_MAX + 1)).is_err());
    }

    #[test]
    fn ram_role_names() {
        assert!(check_ram_role_name("AppSnapshotRoleName").is_ok());
        assert!(check_ram_role_name("a.b-c_d").is_ok());
        for bad in [
            "",
            "../../..",
            "a/b",
            "r?x",
            "r%2F",
            "rôle",
            &"r".repeat(65),
        ] {
            assert!(check_ram_role_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_names() {
        assert!(check_group_name("LinuxApp1").is_ok());
        assert!(check_group_name("应用快照").is_ok());
        for bad in ["1app", "a", "a/b", "http://x", "a b", "a\u{1b}"] {
            assert!(check_group_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags() {
        assert!(check_tag("env", "").is_ok());
        assert!(check_tag("aliyun-x", "v").is_err());
        assert!(check_tag("k", "acs:v").is_err());
        assert!(check_tag("appsnap:job", "v").is_err());
        assert!(check_tag("AppConsistent", "True").is_err());
    }

    #[test]
    fn script_env_names() {
        for ok in ["PGPASSFILE", "MYSQL_HOME", "_x1", "TZ"] {
            assert_eq!(check_script_env(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", &"X".repeat(129)] {
            assert!(check_script_env(bad).is_err(), "{bad:?}");
        }
        for secret in [
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            "alibaba_cloud_security_token",
            "APPSNAP_JOB",
            "NOTIFY_SOCKET",
        ] {
            let e = check_script_env(secret).unwrap_err();
            assert!(e.contains("may not be passed"), "{e}");
        }
    }
}
