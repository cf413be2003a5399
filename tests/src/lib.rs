//! Cross-crate scenarios and benchmarks.
pub mod allocator;
pub mod catalogue;
pub mod company;
pub mod fresh_device;
pub mod listeners;
pub mod relay_process;
pub mod workload;
