//! `service_record`: the records hosts publish about services through gossip (a task in a
//! network's `service_table`, an ingress sandbox in the `ingress_table`), fed to
//! `plexus_lb::record`'s readers: they never panic, and a record read encodes to bytes that
//! read back to it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_lb::record::{GatewayRecord, TaskRecord, MAX_RECORD_LEN, MAX_VIPS};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = TaskRecord::decode(data) {
        assert!(record.vips.len() <= MAX_VIPS);
        let bytes = match record.encode() {
            Ok(b) => b,
            Err(e) => panic!("a task record that was read does not encode: {e}"),
        };
        assert!(bytes.len() <= MAX_RECORD_LEN);
        assert_eq!(TaskRecord::decode(&bytes), Ok(record));
    }
    if let Ok(gateway) = GatewayRecord::decode(data) {
        assert_eq!(gateway.encode(), data, "an ingress gateway record has one encoding");
    }
});
