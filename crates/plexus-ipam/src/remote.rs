//! Remote IPAM (to come).
