//! The conformance suite on a real ZooKeeper server, plus what only ZooKeeper can show: a
//! server killed and restarted under a watch, a lock holder's session lost, a stopped server,
//! TTL znodes, implicit parents.

use plexus_testkit::kv_conformance;
use plexus_testkit::zookeeper::ZkBackend;

kv_conformance!(zookeeper, ZkBackend::new());
