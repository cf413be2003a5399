//! The benchmark's allocator: mimalloc, as `fieldcrm-server` uses, except
//! in a device child (see [`crate::fresh_device`]), which runs on the
//! system allocator as the core does inside an app, so its peak memory is
//! what a phone would see (mimalloc keeps freed pages a while for reuse).
//!
//! The choice is made once, at the process's first allocation, from the
//! environment (read without allocating), so every block is freed by the
//! allocator that made it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CStr;
use std::sync::atomic::{AtomicU8, Ordering};

use mimalloc::MiMalloc;

/// Set (to any value) in the environment of a device child.
pub const SYSTEM_ALLOCATOR_ENV: &str = "FIELDCRM_BENCH_SYSTEM_ALLOCATOR";
const SYSTEM_ALLOCATOR_ENV_C: &CStr = c"FIELDCRM_BENCH_SYSTEM_ALLOCATOR";

#[derive(Debug)]
pub struct BenchAllocator;

const UNDECIDED: u8 = 0;
const SYSTEM: u8 = 1;
const MIMALLOC: u8 = 2;
static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

fn system() -> bool {
    match CHOICE.load(Ordering::Relaxed) {
        SYSTEM => true,
        MIMALLOC => false,
        _ => {
            // SAFETY: a NUL-terminated name; getenv neither allocates nor
            // keeps the pointer. The first allocation comes before any
            // thread starts, so nothing changes the environment meanwhile.
            let set = unsafe { !libc::getenv(SYSTEM_ALLOCATOR_ENV_C.as_ptr()).is_null() };
            CHOICE.store(if set { SYSTEM } else { MIMALLOC }, Ordering::Relaxed);
            set
        }
    }
}

// SAFETY: every call goes to one of two sound allocators, and always to
// the same one for the life of the process.
unsafe impl GlobalAlloc for BenchAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if system() {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if system() {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if system() {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if system() {
            unsafe { System.realloc(ptr, layout, new_size) }
        } else {
            unsafe { MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_c_name_is_the_name() {
        assert_eq!(
            super::SYSTEM_ALLOCATOR_ENV_C.to_str().unwrap(),
            super::SYSTEM_ALLOCATOR_ENV
        );
    }
}
