//! Tokio runtime.
