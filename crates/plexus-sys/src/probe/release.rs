//! The running kernel's release (`uname -r`), parsed.

use std::fmt;

use crate::error::{Result, SysError};

/// A kernel release: the version numbers at its head and the whole string as the kernel gave
/// it (`5.10.0-28-amd64`, `5.14.0-362.el9.x86_64`, `6.1.0-13-cloud-amd64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The major version (`5` of `5.10.0-28-amd64`).
    pub major: u32,
    /// The minor version (`10`).
    pub minor: u32,
    /// The patch level (`0`; `0` when the release has none, as `6.5-rc1`).
    pub patch: u32,
    raw: String,
}

impl Release {
    /// Parses a release string: `MAJOR.MINOR[.PATCH]` followed by anything (a distribution's
    /// build, `-rc1`, `+`). `None` when it does not start that way.
    pub fn parse(release: &str) -> Option<Self> {
        let raw = release.trim();
        let mut numbers = [0u32; 3];
        let mut rest = raw;
        for (i, n) in numbers.iter_mut().enumerate() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                // MAJOR and MINOR are required; a missing PATCH is 0.
                if i < 2 {
                    return None;
                }
                break;
            }
            *n = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            match rest.strip_prefix('.') {
                Some(r) if i < 2 => rest = r,
                _ if i < 1 => return None,
                _ => break,
            }
        }
        Some(Self {
            major: numbers[0],
            minor: numbers[1],
            patch: numbers[2],
            raw: raw.to_string(),
        })
    }

    /// The running kernel's release (`uname(2)`).
    pub fn current() -> Result<Self> {
        let uts = nix::sys::utsname::uname().map_err(|e| SysError::Io {
            path: "uname".into(),
            source: e.into(),
        })?;
        let release = uts.release().to_string_lossy().into_owned();
        Self::parse(&release).ok_or_else(|| SysError::Unsupported {
            feature: format!("kernel release {release:?}"),
            hint: "it does not start with MAJOR.MINOR".into(),
        })
    }

    /// Whether this release is `major.minor` or later.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// The release as the kernel gave it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> (u32, u32, u32) {
        let r = Release::parse(s).unwrap_or_else(|| panic!("{s:?} not parsed"));
        assert_eq!(r.as_str(), s.trim());
        (r.major, r.minor, r.patch)
    }

    #[test]
    fn distribution_releases_parse() {
        assert_eq!(v("5.10.0-28-amd64"), (5, 10, 0)); // Debian 11
        assert_eq!(v("6.1.0-13-cloud-amd64"), (6, 1, 0)); // Debian 12
        assert_eq!(v("5.15.0-91-generic"), (5, 15, 0)); // Ubuntu 22.04
        assert_eq!(v("5.14.0-362.el9.x86_64"), (5, 14, 0)); // RHEL 9
        assert_eq!(v("6.18.44-fc-v1300"), (6, 18, 44));
        assert_eq!(v("4.19.0"), (4, 19, 0));
        assert_eq!(v("6.5-rc1"), (6, 5, 0));
        assert_eq!(v("6.6.0+"), (6, 6, 0));
        assert_eq!(v("6.8"), (6, 8, 0));
        assert_eq!(v("5.4.0\n"), (5, 4, 0));
        assert_eq!(v("6.10.3.4"), (6, 10, 3));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "linux", "6", "6.", "6-rc1", ".10", "v6.1", "x.1.2"] {
            assert!(Release::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_floor_compares_numerically() {
        let at = |s: &str| {
            Release::parse(s)
                .map(|r| r.at_least(5, 10))
                .unwrap_or_else(|| panic!("{s}"))
        };
        assert!(at("5.10.0-28-amd64"));
        assert!(at("5.14.0-362.el9.x86_64"));
        assert!(at("5.15.0-91-generic"));
        assert!(at("6.1.0-13-cloud-amd64"));
        assert!(at("6.0"));
        // 5.9 < 5.10 although "5.9" > "5.10" as text.
        assert!(!at("5.9.16"));
        assert!(!at("5.4.0-150-generic"));
        assert!(!at("4.19.0-26-amd64"));
        assert!(!at("3.10.0-1160.el7.x86_64"));
    }
}
