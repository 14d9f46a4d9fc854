//! The CNI environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`), checked as the spec defines each variable; errors name the variable (code 4).

use std::collections::BTreeMap;

use crate::error::{code, CniError, Result};

/// What the runtime asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach it (idempotent).
    Del,
    /// Verify the attachment.
    Check,
    /// Report the supported versions.
    Version,
    /// 1.1: whether the plugin can take ADDs.
    Status,
    /// 1.1: release every attachment not in `cni.dev/valid-attachments`.
    Gc,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    "invalid CNI_COMMAND",
                    format!(
                        "CNI_COMMAND={other:?}: expected ADD, DEL, CHECK, VERSION, STATUS or GC"
                    ),
                ))
            }
        })
    }
}

/// The variables of one invocation, checked for its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK).
    pub container_id: String,
    /// `CNI_NETNS` (ADD, CHECK; optional for DEL).
    pub netns: Option<String>,
    /// `CNI_IFNAME` (ADD, DEL, CHECK).
    pub ifname: String,
    /// `CNI_ARGS`, as key-value pairs.
    pub args: BTreeMap<String, String>,
}

fn invalid(var: &str, details: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_ENV, format!("invalid {var}"), details)
}

/// Checks a container id as the spec defines it: not empty, an alphanumeric first character,
/// then alphanumerics, `_`, `.` or `-`.
pub fn check_container_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    match chars.next() {
        None => return Err(invalid("CNI_CONTAINERID", "CNI_CONTAINERID is empty")),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(invalid(
                "CNI_CONTAINERID",
                format!("CNI_CONTAINERID={id:?} must start with a letter or digit"),
            ))
        }
        _ => {}
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c))) {
        return Err(invalid(
            "CNI_CONTAINERID",
            format!("CNI_CONTAINERID={id:?} contains {bad:?}; only letters, digits, '_', '.' and '-' are allowed"),
        ));
    }
    // The sandbox is named `cni-<id>`, within the controller's 255 bytes.
    if id.len() > 200 {
        return Err(invalid(
            "CNI_CONTAINERID",
            format!("CNI_CONTAINERID is {} bytes long; at most 200", id.len()),
        ));
    }
    Ok(())
}

/// Checks an interface name as the spec and Linux define it: 1 to 15 bytes, not `.` or
/// `..`, no `/`, `:` or whitespace.
pub fn check_ifname(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.len() > 15 {
        Some(format!("is {} bytes long; at most 15", name.len()))
    } else if name == "." || name == ".." {
        Some("must not be \".\" or \"..\"".to_string())
    } else {
        name.chars()
            .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
            .map(|c| format!("contains {c:?}"))
    };
    match why {
        Some(why) => Err(invalid("CNI_IFNAME", format!("CNI_IFNAME={name:?} {why}"))),
        None => Ok(()),
    }
}

/// Parses `CNI_ARGS`: `KEY=VALUE` pairs separated by `;` (empty: none).
pub fn parse_args(value: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in value.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(invalid(
                "CNI_ARGS",
                format!("CNI_ARGS item {pair:?} is not KEY=VALUE"),
            ));
        };
        if k.is_empty() {
            return Err(invalid(
                "CNI_ARGS",
                format!("CNI_ARGS item {pair:?} has an empty key"),
            ));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

impl Env {
    /// Reads and checks the variables through `get` (the process's environment, or a
    /// test's map).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let command = match get("CNI_COMMAND") {
            Some(c) => Command::parse(&c)?,
            None => return Err(invalid("CNI_COMMAND", "CNI_COMMAND is not set")),
        };
        let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let non_empty = |var: &str| get(var).filter(|v| !v.is_empty());
        let mut env = Env {
            command,
            container_id: String::new(),
            netns: non_empty("CNI_NETNS"),
            ifname: String::new(),
            args: parse_args(&get("CNI_ARGS").unwrap_or_default())?,
        };
        if !needs_container {
            return Ok(env);
        }
        env.container_id = non_empty("CNI_CONTAINERID").ok_or_else(|| {
            invalid(
                "CNI_CONTAINERID",
                format!("CNI_CONTAINERID is not set (required for {command:?})"),
            )
        })?;
        check_container_id(&env.container_id)?;
        env.ifname = non_empty("CNI_IFNAME").ok_or_else(|| {
            invalid(
                "CNI_IFNAME",
                format!("CNI_IFNAME is not set (required for {command:?})"),
            )
        })?;
        check_ifname(&env.ifname)?;
        if command != Command::Del && env.netns.is_none() {
            return Err(invalid(
                "CNI_NETNS",
                format!("CNI_NETNS is not set (required for {command:?})"),
            ));
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Env> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::read(|k| map.get(k).cloned())
    }

    #[test]
    fn add_needs_the_namespace_and_names_it() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.details.contains("CNI_NETNS"), "{e}");
    }

    #[test]
    fn del_does_not_need_the_namespace() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(e.netns, None);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("CNI_CONTAINERID", "-x"),
            ("CNI_CONTAINERID", "a b"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_IFNAME", "waytoolonginterface"),
            ("CNI_IFNAME", ".."),
            ("CNI_ARGS", "novalue"),
            ("CNI_COMMAND", "ATTACH"),
        ] {
            let mut pairs = vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/run/netns/x"),
            ];
            pairs.retain(|(k, _)| *k != var);
            pairs.push((var, value));
            let e = env(&pairs).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV, "{var}={value}");
            assert!(e.details.contains(var), "{var}: {e}");
        }
    }

    #[test]
    fn version_needs_nothing_else() {
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }
}
