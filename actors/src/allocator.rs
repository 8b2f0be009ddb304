//! The memory allocator every shop binary uses.
//!
//! Services allocate a little for every message (subjects, headers, payloads,
//! JSON); under load glibc's malloc took about a tenth of all CPU in the
//! order-placement benchmark. A binary opts in with:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: shop_actors::Allocator = shop_actors::Allocator;
//! ```

/// mimalloc, as the global allocator of a service binary.
pub use mimalloc::MiMalloc as Allocator;
