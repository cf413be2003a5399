//! Cross-crate scenarios and benchmarks.
pub mod workload;
