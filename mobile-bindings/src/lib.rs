//! FFI bindings (issue 4).
