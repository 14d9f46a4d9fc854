//! Key and directory syntax, checked the same way for every backend before anything is sent.
//!
//! Keys are `/`-separated paths of non-empty segments: `docker/network/v1.0/network/3f2a`. One
//! leading `/` is accepted and dropped, so `/a/b` and `a/b` are the same key. A leaf key must not
//! end in `/`; a directory may, and the trailing `/` is dropped.

use crate::error::{KvError, Result};

/// Checks a leaf key and returns it in canonical form (no leading `/`).
///
/// ```
/// assert_eq!(plexus_kv::key::leaf("/a/b").unwrap(), "a/b");
/// assert!(plexus_kv::key::leaf("a//b").is_err());
/// assert!(plexus_kv::key::leaf("a/b/").is_err());
/// ```
pub fn leaf(key: &str) -> Result<&str> {
    let canonical = key.strip_prefix('/').unwrap_or(key);
    let invalid = |reason| {
        Err(KvError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if canonical.is_empty() {
        return invalid("a key must not be empty");
    }
    if canonical.ends_with('/') {
        return invalid("a key must not end in '/' (that names a directory)");
    }
    check_segments(key, canonical)?;
    Ok(canonical)
}

/// Checks a directory and returns it in canonical form (no leading or trailing `/`).
///
/// The empty directory (`""` or `"/"`) is the root; [`directory_nonroot`] refuses it where
/// acting on everything would be a mistake (`delete_tree`).
pub fn directory(dir: &str) -> Result<&str> {
    let canonical = dir.strip_prefix('/').unwrap_or(dir);
    let canonical = canonical.strip_suffix('/').unwrap_or(canonical);
    if canonical.is_empty() {
        return Ok(canonical);
    }
    check_segments(dir, canonical)?;
    Ok(canonical)
}

/// Like [`directory`] but refuses the root.
pub fn directory_nonroot(dir: &str) -> Result<&str> {
    let canonical = directory(dir)?;
    if canonical.is_empty() {
        return Err(KvError::InvalidKey {
            key: dir.to_string(),
            reason: "the root directory cannot be used here; name a directory",
        });
    }
    Ok(canonical)
}

/// The prefix that every key strictly under `dir` starts with (`""` for the root).
pub fn dir_prefix(dir: &str) -> String {
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}

fn check_segments(original: &str, canonical: &str) -> Result<()> {
    let invalid = |reason| {
        Err(KvError::InvalidKey {
            key: original.to_string(),
            reason,
        })
    };
    if canonical.contains("//") || canonical.starts_with('/') {
        return invalid("a key must not contain an empty segment ('//')");
    }
    if canonical.chars().any(|c| c == '\0') {
        return invalid("a key must not contain NUL");
    }
    if canonical.split('/').any(|s| s == "." || s == "..") {
        return invalid("a key must not contain '.' or '..' segments");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_keys() {
        assert_eq!(leaf("a").unwrap(), "a");
        assert_eq!(leaf("/a/b").unwrap(), "a/b");
        assert_eq!(leaf("réseau/网络").unwrap(), "réseau/网络");
        for bad in ["", "/", "a/", "a//b", "//a", "a/./b", "a/../b", "a\0b"] {
            assert!(leaf(bad).is_err(), "{bad:?} accepted");
        }
        let err = leaf("a//b").unwrap_err().to_string();
        assert!(err.contains("a//b") && err.contains("//"), "{err}");
    }

    #[test]
    fn directories() {
        assert_eq!(directory("").unwrap(), "");
        assert_eq!(directory("/").unwrap(), "");
        assert_eq!(directory("a/b/").unwrap(), "a/b");
        assert!(directory("a//b").is_err());
        assert!(directory_nonroot("/").is_err());
        assert_eq!(dir_prefix("a"), "a/");
        assert_eq!(dir_prefix(""), "");
    }
}
