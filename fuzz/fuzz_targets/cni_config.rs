//! `cni_config`: a CNI network configuration (stdin of `plexus-cni`, untrusted JSON), fed to
//! `plexus_cni::config::NetConf::parse`, and the same bytes as plexusd's HTTP answer to
//! `plexus_cni::client::parse_answer`.
//!
//! No panic, and:
//! - an accepted configuration has a supported `cniVersion`, a non-empty `name` and network,
//!   and a socket (if any) that is an absolute path;
//! - a refusal carries one of CNI's codes for bad configurations (1, 2, 6 or 7) and names
//!   what was wrong;
//! - an accepted answer has a status from 100 to 599 that is not interim.

#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_cni::config::{NetConf, SUPPORTED_VERSIONS};

fuzz_target!(|data: &[u8]| {
    match NetConf::parse(data) {
        Ok(conf) => {
            assert!(SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()));
            assert!(!conf.name.is_empty() && !conf.network.is_empty());
            if let Some(s) = &conf.socket {
                assert!(s.starts_with('/'), "{s}");
            }
        }
        Err(e) => {
            assert!(matches!(e.code, 1 | 2 | 6 | 7), "{e}");
            assert!(!e.msg.is_empty() && !e.details.is_empty(), "{e}");
        }
    }
    if let Ok(answer) = plexus_cni::client::parse_answer(data) {
        assert!((200..600).contains(&answer.status), "{}", answer.status);
    }
});
