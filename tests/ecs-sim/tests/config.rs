//! The configuration file: the shipped example parses, rules are enforced.

use ecs_sim::config::{ConfigError, SimConfig};

#[test]
fn example_config_parses_and_validates() {
    let text = include_str!("../sim.example.toml");
    let cfg: SimConfig = toml::from_str(text).expect("example parses");
    cfg.validate().expect("example is valid");
    assert_eq!(cfg.disks.len(), 3);
    assert_eq!(cfg.disks[0].serial(), "bp1sys0000000000000");
    assert_eq!(cfg.faults.throttle_rps_per_key, Some(50));
    assert_eq!(
        cfg.faults.actions["CreateSnapshotGroup"]
            .error
            .as_ref()
            .unwrap()
            .times,
        Some(1)
    );
    assert_eq!(cfg.faults.attach_no_device.as_ref().unwrap().times, Some(1));
    assert_eq!(cfg.faults.detach_fails.as_ref().unwrap().status, 403);
    assert_eq!(
        cfg.restore.by_id_dir.as_deref(),
        Some(std::path::Path::new("/tmp/ecs-sim/by-id"))
    );
    assert_eq!(cfg.restore.attach_delay_ms, 1000);
}

#[test]
fn restore_defaults_and_rules() {
    let c = minimal("").unwrap();
    assert_eq!(c.restore.by_id_dir, None);
    assert_eq!(c.disk_dir(), std::path::Path::new("/tmp/x/disks"));
    assert_eq!(c.restore.create_delay_ms, 1000);
    let c = minimal("[restore]\ndisk_dir = \"/d\"\ncreate_delay_ms = 5\n").unwrap();
    assert_eq!(c.disk_dir(), std::path::Path::new("/d"));
    assert_eq!(c.restore.create_delay_ms, 5);
    assert!(minimal("[restore]\nby_id_dir = \"rel\"\n")
        .unwrap_err()
        .contains("absolute"));
    assert!(minimal("[restore]\nattach_dir = \"/x\"\n")
        .unwrap_err()
        .contains("unknown field"));
    assert!(minimal("[faults]\ndetach_fails = { times = 2 }\n").is_ok());
}

fn minimal(extra: &str) -> Result<SimConfig, String> {
    let text = format!(
        "region_id = \"r\"\nzone_id = \"z\"\ninstance_id = \"i\"\nsnapshot_dir = \"/tmp/x\"\n{extra}"
    );
    let cfg: SimConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

#[test]
fn defaults_and_rules() {
    let c = minimal("").unwrap();
    assert_eq!(c.listen, "127.0.0.1");
    assert_eq!(c.credential_lifetime_secs, 21600);
    assert!(minimal("listen = \"::1\"").is_ok());
    assert!(minimal("listen = \"127.0.0.2\"").is_ok());
    let e = minimal("listen = \"10.0.0.1\"").unwrap_err();
    assert!(e.contains("not a loopback"), "{e}");
    assert!(minimal("listen = \"localhost\"")
        .unwrap_err()
        .contains("not an IP"));
    assert!(minimal("credential_lifetime_secs = 0").is_err());
    assert!(minimal("time_to_accomplish_secs = -1.0").is_err());
    let dup =
        "[[disk]]\nid = \"d-1\"\nbacking = \"/x\"\n[[disk]]\nid = \"d-1\"\nbacking = \"/y\"\n";
    assert!(minimal(dup).unwrap_err().contains("duplicate"));
    assert!(minimal("[[disk]]\nid = \"x-1\"\nbacking = \"/x\"\n").is_err());
    assert!(minimal("[[access_keys]]\nid = \"STS.x\"\nsecret = \"s\"\n").is_err());
    assert!(minimal("[[disk]]\nid = \"d-1\"\nbacking = \"/x\"\ntype = \"root\"\n").is_err());
}

#[test]
fn fleet_instances_need_their_own_loopback_address() {
    let inst =
        |id: &str, ip: &str| format!("[[instance]]\nid = \"{id}\"\nimds_listen = \"{ip}\"\n");
    let two = format!("{}{}", inst("i-2", "127.0.1.2"), inst("i-3", "127.0.1.3"));
    let c = minimal(&two).unwrap();
    assert_eq!(c.instances.len(), 2);
    let e = minimal(&inst("i-2", "10.0.0.2")).unwrap_err();
    assert!(e.contains("not a loopback"), "{e}");
    let e = minimal(&inst("i-2", "127.0.0.1")).unwrap_err();
    assert!(e.contains("already used") && e.contains("i-2"), "{e}");
    let e = minimal(&format!(
        "{}{}",
        inst("i-2", "127.0.1.2"),
        inst("i-2", "127.0.1.3")
    ))
    .unwrap_err();
    assert!(e.contains("duplicate instance id i-2"), "{e}");
    let e = minimal(&inst("x-2", "127.0.1.2")).unwrap_err();
    assert!(e.contains("must start with i-"), "{e}");
}

#[test]
fn load_reports_missing_file() {
    let e = SimConfig::load(std::path::Path::new("/nonexistent/sim.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
}
