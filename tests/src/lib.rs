//! Cross-crate scenarios and benchmarks.
