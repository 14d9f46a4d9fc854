//! A real zookeeper server for tests (being written).
