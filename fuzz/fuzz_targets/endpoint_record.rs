//! `endpoint_record`: the embedded DNS's cross-host endpoint records (the values of a
//! network's `endpoint_table`, as any host of the cluster may publish them), fed to
//! `plexus_dns::record::EndpointRecord::decode`: it never panics, and a record it reads
//! encodes (the writer's checks are the reader's) to bytes that read back to it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_dns::record::{EndpointRecord, MAX_ADDRS, MAX_NAMES};

fuzz_target!(|data: &[u8]| {
    let Ok(record) = EndpointRecord::decode(data) else {
        return;
    };
    assert!(record.aliases.len() < MAX_NAMES && record.addrs.len() <= MAX_ADDRS);
    let names = record.names();
    assert_eq!(names.first(), Some(&record.sandbox));
    let bytes = match record.encode() {
        Ok(b) => b,
        Err(e) => panic!("a record that was read does not encode: {e}"),
    };
    assert!(bytes.len() <= data.len(), "re-encoded record grew");
    assert_eq!(EndpointRecord::decode(&bytes), Ok(record));
});
