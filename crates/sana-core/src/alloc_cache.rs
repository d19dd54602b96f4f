//! A global allocator that keeps freed large blocks for the next request of the same size.
//!
//! Why: a DiT forward allocates and frees the same few dozen activation sizes in every block (tens of MB
//! each at 1024²). glibc serves every request above its mmap threshold (at most 32 MiB) with a fresh
//! mmap and unmaps it on free, so each block's pages fault in again, zeroed by the kernel: 1.9 M page
//! faults per Sana-600M forward at 1024² batch 2, ≈ 5 % of its CPU time (perf). Reusing the block costs
//! nothing for an uninitialised request and one memset for a zeroed one.
//!
//! Policy: blocks from [`MIN_BLOCK`] up to half the cap are kept on free, newest first, until
//! [`CACHE_BYTES`] (256 MiB; `SANA_ALLOC_CACHE_MB` overrides it, 0 turns caching off) are held. A
//! request no kept block fits (a new phase: text encoder → DiT → VAE) first returns the oldest kept
//! blocks to the system until the cache plus the request fit under the cap, so what the cache holds on
//! top of the live set never exceeds the cap. Everything else goes straight to the system allocator.
//!
//! Why half: a DC-AE ResBlock at 512² passes 128 MiB activations from op to op (conv, SiLU, conv, norm,
//! residual), each freed as the next is made. Up to a quarter of the cap (64 MiB), none was kept: every
//! op faulted in a fresh 128 MiB, 1.29 M page faults and 3.6 s of system time per decode. Up to half,
//! two of them are kept and passed along: 0.73 M faults, 2.0–2.3 s, and a *lower* peak RSS (1.84
//! against 2.04 GB), since reuse no longer leaves glibc's heap holding the mid-sized blocks that its
//! adaptive mmap threshold moves there.
//!
//! Register it in a binary: `#[global_allocator] static A: LargeBlockCache = LargeBlockCache::new();`
//! (the Node addon and the benchmark examples do).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Smallest request the cache handles (smaller ones are glibc's business: its heap reuses them).
pub const MIN_BLOCK: usize = 1 << 20;
/// Default bytes the cache may hold.
pub const CACHE_BYTES: usize = 256 << 20;
/// Sizes are rounded up to this, so that requests that differ by a little share blocks.
const GRAIN: usize = 64 << 10;
const SLOTS: usize = 64;

#[derive(Clone, Copy)]
struct Block {
    ptr: usize,
    size: usize,
    align: usize,
    /// Insertion order, for evicting the oldest.
    age: u64,
}

struct Slots {
    blocks: [Option<Block>; SLOTS],
    bytes: usize,
    clock: u64,
}

/// The allocator (see the module docs).
pub struct LargeBlockCache {
    slots: Mutex<Slots>,
    /// The cap in bytes, read from the environment on first use (usize::MAX = not read yet).
    cap: AtomicUsize,
}

impl Default for LargeBlockCache {
    fn default() -> Self {
        Self::new()
    }
}

impl LargeBlockCache {
    pub const fn new() -> Self {
        LargeBlockCache { slots: Mutex::new(Slots { blocks: [None; SLOTS], bytes: 0, clock: 0 }), cap: AtomicUsize::new(usize::MAX) }
    }

    /// A cache with a fixed cap (tests; 0 = off).
    pub const fn with_cap(bytes: usize) -> Self {
        LargeBlockCache { slots: Mutex::new(Slots { blocks: [None; SLOTS], bytes: 0, clock: 0 }), cap: AtomicUsize::new(bytes) }
    }

    fn cap(&self) -> usize {
        let c = self.cap.load(Ordering::Relaxed);
        if c != usize::MAX {
            return c;
        }
        // std::env::var allocates, a small request that never re-enters this path.
        let c = std::env::var("SANA_ALLOC_CACHE_MB").ok().and_then(|v| v.trim().parse::<usize>().ok()).map_or(CACHE_BYTES, |mb| mb << 20);
        self.cap.store(c, Ordering::Relaxed);
        c
    }

    /// Bytes held for reuse now.
    pub fn cached_bytes(&self) -> usize {
        self.slots.lock().map_or(0, |s| s.bytes)
    }

    /// Return every kept block to the system (e.g. when a long-lived process goes idle).
    pub fn release(&self) {
        if let Ok(mut s) = self.slots.lock() {
            while s.free_oldest() {}
        }
    }

    /// The size class of a request the cache handles, or None.
    fn class(&self, layout: &Layout) -> Option<usize> {
        // The size test comes first: reading the cap may allocate (small) on first use.
        if layout.size() < MIN_BLOCK || layout.align() > GRAIN {
            return None;
        }
        (layout.size() <= self.cap() / 2).then(|| layout.size().next_multiple_of(GRAIN))
    }

    /// A kept block of `size`/`align`, or None after making room for a new one of that size.
    fn take(&self, size: usize, align: usize) -> Option<*mut u8> {
        let mut s = self.slots.lock().ok()?;
        let newest = s.blocks.iter().enumerate().filter_map(|(i, b)| b.filter(|b| b.size == size && b.align == align).map(|b| (i, b.age))).max_by_key(|&(_, age)| age);
        if let Some((i, _)) = newest {
            let b = s.blocks[i].take()?;
            s.bytes -= b.size;
            return Some(b.ptr as *mut u8);
        }
        let cap = self.cap();
        while s.bytes + size > cap && s.free_oldest() {}
        None
    }
}

impl Slots {
    /// Return the oldest kept block to the system; false when none is kept.
    fn free_oldest(&mut self) -> bool {
        let oldest = self.blocks.iter().enumerate().filter_map(|(i, b)| b.map(|b| (i, b.age))).min_by_key(|&(_, age)| age);
        let Some(b) = oldest.and_then(|(i, _)| self.blocks[i].take()) else { return false };
        self.bytes -= b.size;
        // SAFETY: the block came from System with exactly this size and alignment.
        unsafe { System.dealloc(b.ptr as *mut u8, Layout::from_size_align_unchecked(b.size, b.align)) };
        true
    }
}

// SAFETY: every pointer handed out comes from System with the layout (size rounded to the class) that
// `dealloc` reconstructs from the caller's layout; a kept block is owned by the cache alone.
unsafe impl GlobalAlloc for LargeBlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.class(&layout) {
            None => System.alloc(layout),
            Some(size) => self.take(size, layout.align()).unwrap_or_else(|| System.alloc(Layout::from_size_align_unchecked(size, layout.align()))),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.class(&layout) {
            None => System.alloc_zeroed(layout),
            Some(size) => match self.take(size, layout.align()) {
                Some(p) => {
                    p.write_bytes(0, layout.size());
                    p
                }
                None => System.alloc_zeroed(Layout::from_size_align_unchecked(size, layout.align())),
            },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(size) = self.class(&layout) else {
            return System.dealloc(ptr, layout);
        };
        let system = Layout::from_size_align_unchecked(size, layout.align());
        let cap = self.cap();
        let Ok(mut s) = self.slots.lock() else {
            return System.dealloc(ptr, system);
        };
        while (s.bytes + size > cap || s.blocks.iter().all(Option::is_some)) && s.free_oldest() {}
        if s.bytes + size > cap {
            return System.dealloc(ptr, system);
        }
        s.clock += 1;
        let age = s.clock;
        let free = s.blocks.iter().position(Option::is_none).expect("a slot was freed above");
        s.blocks[free] = Some(Block { ptr: ptr as usize, size, align: layout.align(), age });
        s.bytes += size;
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        match (self.class(&layout), self.class(&new)) {
            (None, None) => System.realloc(ptr, layout, new_size),
            // Still within the block's rounded size: keep it.
            (Some(a), Some(b)) if a == b => ptr,
            _ => {
                let p = self.alloc(new);
                if !p.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;

    fn layout(bytes: usize) -> Layout {
        Layout::from_size_align(bytes, 64).unwrap()
    }

    #[test]
    fn a_freed_block_serves_the_next_request_of_its_class() {
        let c = LargeBlockCache::with_cap(64 * MB);
        unsafe {
            let p = c.alloc(layout(3 * MB));
            p.write_bytes(7, 3 * MB);
            c.dealloc(p, layout(3 * MB));
            assert_eq!(c.cached_bytes(), 3 * MB);
            // A slightly different size rounds to the same class: the same block, zeroed on request.
            let q = c.alloc_zeroed(layout(3 * MB - 100));
            assert_eq!(q, p);
            assert!(std::slice::from_raw_parts(q, 3 * MB - 100).iter().all(|&b| b == 0));
            assert_eq!(c.cached_bytes(), 0);
            c.dealloc(q, layout(3 * MB - 100));
            c.release();
            assert_eq!(c.cached_bytes(), 0);
        }
    }

    #[test]
    fn the_cache_never_holds_more_than_its_cap() {
        let c = LargeBlockCache::with_cap(16 * MB);
        unsafe {
            let ps: Vec<_> = (0..6).map(|_| c.alloc(layout(4 * MB))).collect();
            ps.iter().for_each(|&p| c.dealloc(p, layout(4 * MB)));
            assert_eq!(c.cached_bytes(), 16 * MB);
            // A miss of another size makes room first: cache + request ≤ cap.
            let q = c.alloc(layout(3 * MB));
            assert!(c.cached_bytes() + 3 * MB <= 16 * MB);
            c.dealloc(q, layout(3 * MB));
            assert!(c.cached_bytes() <= 16 * MB);
            // Blocks above half the cap, small ones and an off cache bypass it.
            let before = c.cached_bytes();
            let big = c.alloc(layout(9 * MB));
            c.dealloc(big, layout(9 * MB));
            let small = c.alloc(layout(1000));
            c.dealloc(small, layout(1000));
            assert_eq!(c.cached_bytes(), before, "neither was kept");
            // Half the cap itself is kept, and serves the next request.
            c.release();
            let half = c.alloc(layout(8 * MB));
            c.dealloc(half, layout(8 * MB));
            assert_eq!(c.cached_bytes(), 8 * MB);
            let again = c.alloc(layout(8 * MB));
            assert_eq!(c.cached_bytes(), 0);
            c.dealloc(again, layout(8 * MB));
            let off = LargeBlockCache::with_cap(0);
            let p = off.alloc(layout(2 * MB));
            off.dealloc(p, layout(2 * MB));
            assert_eq!(off.cached_bytes(), 0);
            c.release();
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_classes() {
        let c = LargeBlockCache::with_cap(64 * MB);
        unsafe {
            let p = c.alloc(layout(1000));
            p.write_bytes(5, 1000);
            let q = c.realloc(p, layout(1000), 2 * MB + 10);
            assert!(std::slice::from_raw_parts(q, 1000).iter().all(|&b| b == 5));
            let r = c.realloc(q, layout(2 * MB + 10), 2 * MB + 1000);
            assert_eq!(r, q, "same class: same block");
            let s = c.realloc(r, layout(2 * MB + 1000), 500);
            assert!(std::slice::from_raw_parts(s, 500).iter().all(|&b| b == 5));
            c.dealloc(s, layout(500));
            c.release();
        }
    }
}
