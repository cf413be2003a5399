//! Cross-crate scenarios and benchmarks.
pub mod relay_process;
pub mod workload;
