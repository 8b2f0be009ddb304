//! The memory allocator of every binary that links the runtime: mimalloc.
//!
//! Services allocate a little for every message (subjects, headers, payloads,
//! JSON); under load glibc's malloc took about a tenth of all CPU in the
//! order-placement benchmark. Declaring it here, once, gives every service,
//! the gateway, `shop` and the bench harness the same allocator without each
//! `main.rs` having to remember it.

/// mimalloc.
pub use mimalloc::MiMalloc as Allocator;

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;
