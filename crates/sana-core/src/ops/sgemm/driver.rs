//! Blocking, packing and threading shared by every microkernel: BLIS's loops around the MR×NR kernel.
//!
//! for jc in n by NC: for pc in k by KC: pack B[pc.., jc..] into NR-column panels (all threads share it)
//!   for each (MC-row block of A, range of B panels) — one rayon task each: pack the A block into MR-row
//!   panels (the task's own buffer), then every A panel × B panel tile, in the kernel's order
//!   ([`MicroKernel::B_RUN_BYTES`]).
//!
//! Two variants share the packers and the tile loop ([`run_block`]): [`gemm_shared_a`] for few rows
//! (A packed once, each task packs its own B columns: no pack/compute barriers, which matter when B is
//! the weights streamed from memory) and [`gemm_sum`] for a sum of products into one dst (conv taps).

use super::Strided;
use half::{bf16, f16};
use rayon::prelude::*;
use std::cell::Cell;
use std::thread::LocalKey;

/// A product smaller than this (in flops) runs on the calling thread: a rayon fork costs microseconds.
const PARALLEL_FLOPS: usize = 1 << 21;

thread_local! {
    /// Set by [`super::sgemm_serial`]: products on this thread run on it alone.
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// Threads a product of `flops` splits over: 1 when small or inside [`serial`], else rayon's pool.
pub(super) fn threads_for(flops: usize) -> usize {
    if flops < PARALLEL_FLOPS || SERIAL.get() { 1 } else { rayon::current_num_threads().max(1) }
}

/// Run `f` with every product on this thread kept on it.
pub(super) fn serial<R>(f: impl FnOnce() -> R) -> R {
    let was = SERIAL.replace(true);
    let r = f();
    SERIAL.set(was);
    r
}

/// An element type the rhs may be stored as; widened to f32 (exactly) as it is packed.
pub trait Elem: Copy + Send + Sync + 'static {
    /// True for bf16, the one type the opt-in bf16-dot kernel multiplies directly.
    const IS_BF16: bool;
    fn to_f32(self) -> f32;
    /// 8 consecutive values at `p`, widened. Safety: 8 values readable at p; only inlined into
    /// functions that enable avx2 and f16c.
    #[cfg(target_arch = "x86_64")]
    #[doc(hidden)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl Elem for f32 {
    const IS_BF16: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl Elem for bf16 {
    const IS_BF16: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // bf16 is the top half of an f32: a shift, not half's generic conversion.
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let h = _mm_loadu_si128(p.cast());
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

impl Elem for f16 {
    const IS_BF16: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
    }
}

/// The type a microkernel reads its packed panels as (f32, or bf16 for the bf16-dot kernel).
pub(super) trait Packed: Copy + Default + Send + Sync + 'static {
    fn from_f32(x: f32) -> Self;
    /// The panels as f32, where this is f32 (a product may then write its output as the next one's
    /// packed operand); else None.
    fn as_f32s(panels: &mut [Self]) -> Option<&mut [f32]>;
}

impl Packed for f32 {
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    fn as_f32s(panels: &mut [Self]) -> Option<&mut [f32]> {
        Some(panels)
    }
}

impl Packed for bf16 {
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x) // round to nearest even
    }
    fn as_f32s(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
}

/// A strided matrix view whose every element (within the shape it was checked for) lies in `data`.
#[derive(Clone, Copy)]
pub(super) struct View<'a, T> {
    data: &'a [T],
    s: Strided,
}

impl<'a, T: Copy> View<'a, T> {
    pub fn new(data: &'a [T], s: Strided) -> Self {
        View { data, s }
    }

    /// The view starting at element (i, j).
    fn at(self, i: usize, j: usize) -> Self {
        View { s: Strided { offset: self.s.offset + i * self.s.rs + j * self.s.cs, ..self.s }, ..self }
    }

    /// The transposed view.
    pub fn t(self) -> Self {
        View { s: Strided { offset: self.s.offset, rs: self.s.cs, cs: self.s.rs }, ..self }
    }

    /// Pointer to element (i, j). Safety: (i, j) lies within the shape the view's bounds were checked for.
    #[inline(always)]
    pub unsafe fn ptr(&self, i: usize, j: usize) -> *const T {
        self.data.as_ptr().add(self.s.offset + i * self.s.rs + j * self.s.cs)
    }

    pub fn strides(&self) -> (usize, usize) {
        (self.s.rs, self.s.cs)
    }
}

/// Where one microkernel call writes: an `mr × nr` block (mr ≤ MR, nr ≤ NR) of dst, which it adds to
/// (`load`) or overwrites.
pub(super) struct Tile {
    pub c: *mut f32,
    pub rs: usize,
    pub cs: usize,
    pub mr: usize,
    pub nr: usize,
    pub load: bool,
}

/// An MR×NR microkernel and the blocking it is tuned for.
pub(super) trait MicroKernel: Sync {
    type P: Packed;
    /// Rows of an A panel and columns of a B panel.
    const MR: usize;
    const NR: usize;
    /// Packed depth granule: each slice's depth is padded with zeros to a multiple of it (2 for
    /// vdpbf16ps' bf16 pairs, 32 for an AMX tile's k, else 1).
    const KG: usize;
    /// k values per group of an A / B panel: value (w, p) of a panel lies at (p / g)·lanes·g + w·g + p % g
    /// (g = 1: k-major rows of `lanes` values; g = 2: k-pairs; g = 32: AMX tile rows). Each divides KG.
    const KG_A: usize = Self::KG;
    const KG_B: usize = Self::KG;
    /// Depth of one packed slice, rows of an A block (a multiple of MR), columns of a B block.
    const KC: usize;
    const MC: usize;
    const NC: usize;
    /// Packed B bytes each A panel meets before the next A panel (see [`run_block`]); 0 for one B panel.
    /// A kernel whose B panel outgrows L1 (NR wide, KC deep) reuses its A panel over several instead.
    const B_RUN_BYTES: usize = 0;
    /// t (=, or += with t.load) a · b over depth `kc` (a multiple of KG): `a` one packed A panel
    /// (kc × MR), `b` one packed B panel (kc × NR). Safety: the panels hold kc·MR and kc·NR values and
    /// the tile's mr × nr elements lie in dst.
    unsafe fn tile(&self, kc: usize, a: *const Self::P, b: *const Self::P, t: &Tile);

    /// Pack one full panel (`NR` columns of B, or `MR` rows of A; depth `kc`, in the side's group layout
    /// and zero-padded to a multiple of KG) whose values are contiguous along k, faster than the generic
    /// loop; false where this kernel has no such packer. `src` is element (k 0, lane 0), `stride` the
    /// distance between lanes. Safety: as [`pack_panel`].
    unsafe fn pack_contiguous<T: Elem>(&self, _side: Side, _src: *const T, _stride: usize, _kc: usize, _out: &mut [Self::P]) -> bool {
        false
    }

    /// As [`Self::pack_contiguous`], for a full panel whose values are contiguous along its lanes (a
    /// row-major B, a column-major A): `stride` is the distance between depth steps.
    unsafe fn pack_across<T: Elem>(&self, _side: Side, _src: *const T, _stride: usize, _kc: usize, _out: &mut [Self::P]) -> bool {
        false
    }
}

/// Write an accumulator tile (row i at `acc[i·ld ..]`) into `t`'s elements, adding when `t.load`.
/// Safety: as [`MicroKernel::tile`].
pub(super) unsafe fn store_tile(acc: &[f32], ld: usize, t: &Tile) {
    for i in 0..t.mr {
        for j in 0..t.nr {
            let c = t.c.add(i * t.rs + j * t.cs);
            *c = if t.load { *c + acc[i * ld + j] } else { acc[i * ld + j] };
        }
    }
}

/// Pack `width × depth` of `v` (element (w, p) = v(w, p)) into one panel of `lanes` along width: value
/// (w, p) at `(p / kg)·lanes·kg + w·kg + p % kg`, padded with zeros to full lanes and to depth `kpad`
/// (a multiple of kg, ≥ depth). `out` holds exactly the panel.
pub(super) fn pack_panel<T: Elem, P: Packed>(v: View<T>, wn: usize, depth: usize, lanes: usize, [kg, kpad]: [usize; 2], out: &mut [P]) {
    assert!(out.len() >= kpad * lanes && wn <= lanes && depth <= kpad && kpad.is_multiple_of(kg));
    if wn < lanes || depth < kpad {
        out.fill(P::default());
    }
    // SAFETY: w < wn and p < depth lie within the block the caller's bounds check covered, and every
    // index written is below kpad · lanes ≤ out.len() (asserted above).
    unsafe {
        match kg {
            1 => pack_panel_kg::<T, P, 1>(v, wn, depth, lanes, out.as_mut_ptr()),
            2 => pack_panel_kg::<T, P, 2>(v, wn, depth, lanes, out.as_mut_ptr()),
            32 => pack_panel_kg::<T, P, 32>(v, wn, depth, lanes, out.as_mut_ptr()),
            _ => unreachable!("panel group {kg}"),
        }
    }
}

/// [`pack_panel`] for a group size known at compile time (the index arithmetic folds).
/// Safety: as in [`pack_panel`].
#[inline(always)]
unsafe fn pack_panel_kg<T: Elem, P: Packed, const KG: usize>(v: View<T>, wn: usize, depth: usize, lanes: usize, out: *mut P) {
    let src = v.ptr(0, 0);
    let (ws, ps) = (v.s.rs, v.s.cs);
    let idx = |w: usize, p: usize| (p / KG) * lanes * KG + w * KG + p % KG;
    // Read along whichever index is contiguous in memory.
    if ps <= ws {
        for w in 0..wn {
            let col = src.add(w * ws);
            for p in 0..depth {
                *out.add(idx(w, p)) = P::from_f32((*col.add(p * ps)).to_f32());
            }
        }
    } else {
        for p in 0..depth {
            let row = src.add(p * ps);
            for w in 0..wn {
                *out.add(idx(w, p)) = P::from_f32((*row.add(w * ws)).to_f32());
            }
        }
    }
}

/// Which operand a [`pack`] call packs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    A,
    B,
}

/// Pack `width × depth` of `v` into consecutive panels (`out` holds exactly ⌈width / lanes⌉ of them),
/// on rayon when `parallel`, through the kernel's fast packers where they apply.
pub(super) fn pack<K: MicroKernel, T: Elem>(kern: &K, side: Side, v: View<T>, width: usize, depth: usize, out: &mut [K::P], parallel: bool) {
    let (lanes, kg) = if side == Side::B { (K::NR, K::KG_B) } else { (K::MR, K::KG_A) };
    let kpad = depth.next_multiple_of(K::KG);
    let panel_len = kpad * lanes;
    let (ws, ps) = v.strides();
    let one = |i: usize, o: &mut [K::P]| {
        let (v, wn) = (v.at(i * lanes, 0), lanes.min(width - i * lanes));
        // SAFETY: the panel's wn × depth elements lie in the checked view; `o` holds the whole panel.
        let fast = wn == lanes
            && ((ps == 1 && unsafe { kern.pack_contiguous(side, v.ptr(0, 0), ws, depth, o) })
                || (ws == 1 && unsafe { kern.pack_across(side, v.ptr(0, 0), ps, depth, o) }));
        if !fast {
            pack_panel(v, wn, depth, lanes, [kg, kpad], o);
        }
    };
    // Rows contiguous along width (conv's im2col columns): each task reads a row segment across
    // PACK_GROUP panels at once. Panel by panel, its 64-byte reads would stride a whole row apart, past
    // what the hardware prefetcher follows.
    let group = |(g, o): (usize, &mut [K::P])| {
        let first = g * PACK_GROUP;
        if ws == 1 && ps > 1 && K::KG == 1 {
            pack_rows(v.at(first * lanes, 0), (width - first * lanes).min(PACK_GROUP * lanes), depth, lanes, o);
        } else {
            o.chunks_mut(panel_len).enumerate().for_each(|(i, op)| one(first + i, op));
        }
    };
    if parallel {
        out.par_chunks_mut(PACK_GROUP * panel_len).enumerate().for_each(group);
    } else {
        out.chunks_mut(PACK_GROUP * panel_len).enumerate().for_each(group);
    }
}

/// Panels packed per task.
const PACK_GROUP: usize = 8;

/// Pack consecutive panels (kg = 1) of a width-contiguous view row by row: `out` holds ⌈wn / lanes⌉
/// panels of depth × lanes.
fn pack_rows<T: Elem, P: Packed>(v: View<T>, wn: usize, depth: usize, lanes: usize, out: &mut [P]) {
    let panels = wn.div_ceil(lanes);
    assert!(out.len() >= panels * depth * lanes);
    if wn < panels * lanes {
        out.fill(P::default());
    }
    for p in 0..depth {
        // SAFETY: w < wn and p < depth lie within the checked block; indices stay below panels·depth·lanes.
        unsafe {
            let row = v.ptr(0, p);
            for jp in 0..panels {
                let dst = out.as_mut_ptr().add(jp * depth * lanes + p * lanes);
                let (src, n) = (row.add(jp * lanes), lanes.min(wn - jp * lanes));
                // Full panel rows (NR = 16 or 32; MR = 6 or 12) with a constant trip count: inlined vector
                // moves. With a run-time count LLVM calls memcpy for every 64 bytes (10 % of a DC-AE
                // decode, perf); element by element, the A rows of a transposed lhs (the linear
                // attention's relu(K)ᵀ) were a quarter of that op.
                if n == 16 {
                    copy_lanes::<T, P, 16>(src, dst);
                } else if n == 32 {
                    copy_lanes::<T, P, 32>(src, dst);
                } else if n == 6 {
                    copy_lanes::<T, P, 6>(src, dst);
                } else if n == 12 {
                    copy_lanes::<T, P, 12>(src, dst);
                } else {
                    for w in 0..n {
                        *dst.add(w) = P::from_f32((*src.add(w)).to_f32());
                    }
                }
            }
        }
    }
}

/// dst[..N] = src[..N], widened/narrowed to the packed type, with a constant trip count.
/// Safety: both hold N elements.
#[inline(always)]
unsafe fn copy_lanes<T: Elem, P: Packed, const N: usize>(src: *const T, dst: *mut P) {
    let (s, d) = (&*src.cast::<[T; N]>(), &mut *dst.cast::<[P; N]>());
    for w in 0..N {
        d[w] = P::from_f32(s[w].to_f32());
    }
}

/// 64-byte aligned storage for packed panels (a B panel row of 16 f32 is one cache line).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Line([u8; 64]);

thread_local! {
    // Reused across calls so that packing does not page-fault fresh memory each time.
    static A_BUF: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    static B_BUF: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    static A_SHARED: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

/// Run `f` on this thread's buffer `key`, grown to `len` values of `P`. The buffer is taken out while `f`
/// runs, so a nested call on the same thread (rayon runs stolen tasks while a thread waits) gets a
/// fresh one instead of aliasing it.
pub(super) fn with_buf<P: Packed, R>(key: &'static LocalKey<Cell<Vec<Line>>>, len: usize, f: impl FnOnce(&mut [P]) -> R) -> R {
    let mut buf = key.take();
    let lines = (len * size_of::<P>()).div_ceil(64);
    if buf.len() < lines {
        buf.resize(lines, Line([0; 64]));
    }
    // SAFETY: the buffer holds at least len·size_of::<P>() bytes, 64-byte aligned (≥ P's alignment), and
    // every bit pattern is a valid P (f32 or bf16).
    let r = f(unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<P>(), len) });
    key.set(buf);
    r
}

// Tasks write disjoint tiles of dst (each (row block, panel range) once per depth slice).
pub(super) use crate::ops::DstPtr;

/// dst[m×n] = (accumulate ? dst : 0) + a · b with kernel `kern`, on rayon's current pool.
/// The views and dst's view `d` must have been bounds-checked for these shapes.
pub(super) fn gemm<K: MicroKernel, TA: Elem, TB: Elem>(
    kern: &K,
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    d: Strided,
    a: View<TA>,
    b: View<TB>,
    accumulate: bool,
) {
    if d.rs == 1 && d.cs != 1 && m > 1 {
        // A column-major dst (a 1×1 conv writing [C, H·W] planes): the kernel would store each tile's 16
        // columns a plane apart and revisit them every KC slice (half speed, measured on the DiT's Mix-FFN).
        // Compute dstᵀ = bᵀ · aᵀ instead, whose rows are contiguous; packing reads either operand through
        // its strides and widens either type, so only the roles change.
        let dt = Strided { offset: d.offset, rs: d.cs, cs: 1 };
        return gemm(kern, [n, m, k], dst, dt, b.t(), a.t(), accumulate);
    }
    if m <= SHARED_A_ROWS && k > 0 && n > SHARED_A_PANELS * K::NR {
        return gemm_shared_a(kern, [m, n, k], dst, d, a, b, accumulate);
    }
    let c = DstPtr(dst.as_mut_ptr());
    if k == 0 {
        if !accumulate {
            // SAFETY: every (i, j) < (m, n) of d lies in dst (checked by the caller).
            (0..m).for_each(|i| (0..n).for_each(|j| unsafe { *c.get().add(d.offset + i * d.rs + j * d.cs) = 0.0 }));
        }
        return;
    }
    let threads = threads_for(2 * m * n * k);
    let row_blocks = RowBlocks::new::<K>(m, threads);
    let m_blocks = row_blocks.count;
    let ncb = column_block::<K>(n);
    for jc in (0..n).step_by(ncb) {
        let nc = ncb.min(n - jc);
        let panels = nc.div_ceil(K::NR);
        // Too few row blocks for the threads: split the B panels among them too (each task then packs its
        // own copy of its A block, cheap next to its share of the product).
        let n_chunks = if m_blocks >= threads { 1 } else { (2 * threads).div_ceil(m_blocks).min(panels) };
        let per_chunk = panels.div_ceil(n_chunks);
        for pc in (0..k).step_by(K::KC) {
            let kc = K::KC.min(k - pc);
            let kpad = kc.next_multiple_of(K::KG);
            let load = accumulate || pc > 0;
            with_buf(&B_BUF, panels * kpad * K::NR, |bp: &mut [K::P]| {
                pack(kern, Side::B, b.at(pc, jc).t(), nc, kc, bp, threads > 1);
                let bp = &*bp;
                let task = |t: usize| {
                    let (ib, chunk) = (t / n_chunks, t % n_chunks);
                    let ([i0, i1], jp0) = (row_blocks.rows(ib), chunk * per_chunk);
                    let (mcur, a_panels) = (i1 - i0, (i1 - i0).div_ceil(K::MR));
                    with_buf(&A_BUF, a_panels * kpad * K::MR, |ap: &mut [K::P]| {
                        pack(kern, Side::A, a.at(i0, pc), mcur, kc, ap, false);
                        let block = Block { rows: [i0, i1], cols: [jc, jc + nc], panels: [jp0, (jp0 + per_chunk).min(panels)] };
                        // SAFETY: both panel sets are packed kpad deep; no other task writes this block now.
                        unsafe { run_block(kern, kpad, ap, bp, c, d, &block, load) };
                    })
                };
                run_tasks(threads, m_blocks * n_chunks, task);
            });
        }
    }
}

/// The part of dst one task computes: rows `rows[0]..rows[1]`, B panels `panels[0]..panels[1]` of the
/// column block starting at `cols[0]` (ending at `cols[1]`).
pub(super) struct Block {
    pub rows: [usize; 2],
    pub cols: [usize; 2],
    pub panels: [usize; 2],
}

/// Every tile of `blk`, in runs of B panels ([`MicroKernel::B_RUN_BYTES`]): each A panel of the block
/// against every B panel of the run, then the next run. With a run of one panel, each B panel stays in L1
/// while the A panels stream from L2 (the kernels that run so have B panels of 16–32 KiB); with a longer
/// run, each A panel meets the run's B panels back to back, which stream from L2.
/// Safety: `ap` holds the block's A panels and `bp` the column block's B panels, both `kpad` deep; the
/// block lies in dst's checked view and no other task writes it meanwhile.
#[inline(always)]
pub(super) unsafe fn run_block<K: MicroKernel>(kern: &K, kpad: usize, ap: &[K::P], bp: &[K::P], c: DstPtr, d: Strided, blk: &Block, load: bool) {
    let ([i0, i1], [jc, j1]) = (blk.rows, blk.cols);
    let run = match K::B_RUN_BYTES {
        0 => 1,
        bytes => (bytes / (kpad * K::NR * size_of::<K::P>())).max(1),
    };
    for first in (blk.panels[0]..blk.panels[1]).step_by(run) {
        let panels = first..(first + run).min(blk.panels[1]);
        for (ip, i) in (i0..i1).step_by(K::MR).enumerate() {
            for jp in panels.clone() {
                let j = jc + jp * K::NR;
                let tile = Tile {
                    c: c.get().add(d.offset + i * d.rs + j * d.cs),
                    rs: d.rs,
                    cs: d.cs,
                    // Clipped to the block, so no tile crosses into another task's.
                    mr: K::MR.min(i1 - i),
                    nr: K::NR.min(j1 - j),
                    load,
                };
                kern.tile(kpad, ap.as_ptr().add(ip * kpad * K::MR), bp.as_ptr().add(jp * kpad * K::NR), &tile);
            }
        }
    }
}

/// The row blocks of `m` rows: as few as MC allows, rounded up to a multiple of the thread count, with
/// MR-aligned boundaries spread evenly over the ⌈m / MR⌉ panels (sizes differ by at most one panel).
///
/// Why spread: rayon hands each thread a contiguous half of the blocks, and a thread that finishes its
/// half finds nothing left to steal. Blocks of equal MR-rounded size put the whole shortfall in the
/// last one: the DiT's 2048 rows became 7 blocks of 264 and one of 200, halves of 1056 and 992 rows, so
/// the second thread idled 6 % of every depth slice of every product. Spread, the halves are 1020 and
/// 1028 rows.
#[derive(Debug, Clone, Copy)]
pub(super) struct RowBlocks {
    m: usize,
    mr: usize,
    panels: usize,
    /// Number of blocks.
    pub count: usize,
}

impl RowBlocks {
    pub fn new<K: MicroKernel>(m: usize, threads: usize) -> Self {
        let panels = m.div_ceil(K::MR);
        let count = panels.div_ceil((K::MC / K::MR).max(1)).next_multiple_of(threads.max(1)).min(panels).max(1);
        RowBlocks { m, mr: K::MR, panels, count }
    }

    /// Rows [start, end) of block `i`.
    pub fn rows(&self, i: usize) -> [usize; 2] {
        let at = |i: usize| (i * self.panels / self.count * self.mr).min(self.m);
        [at(i), at(i + 1)]
    }

    /// Rows of the largest block.
    pub fn max_rows(&self) -> usize {
        self.panels.div_ceil(self.count) * self.mr
    }
}

/// Width of the column blocks `n` is cut into: equal (NR-aligned), up to NC + NC/4. So the 3456-wide
/// merged q/k/v product is one block, not 3072 + a 384-column one that re-packs all of A (and waits at
/// two more barriers) for an eighth of the work.
fn column_block<K: MicroKernel>(n: usize) -> usize {
    n.div_ceil(n.div_ceil(K::NC + K::NC / 4)).next_multiple_of(K::NR)
}

/// `buf` cut into consecutive parts of `sizes`, with each part's offset (for the read-only pass after).
pub(super) fn split_parts<'a, P>(buf: &'a mut [P], sizes: &[usize]) -> (Vec<&'a mut [P]>, Vec<usize>) {
    let offs = sizes.iter().scan(0, |o, &len| Some(std::mem::replace(o, *o + len))).collect();
    let mut parts = Vec::with_capacity(sizes.len());
    let mut rest = buf;
    for &len in sizes {
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(len);
        parts.push(part);
        rest = tail;
    }
    (parts, offs)
}

/// Run `task(0..tasks)` on rayon when there are threads and tasks to share, else on this thread.
fn run_tasks(threads: usize, tasks: usize, task: impl Fn(usize) + Sync + Send) {
    if threads == 1 || tasks == 1 {
        (0..tasks).for_each(task);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
}

/// `f` on every item, on rayon when `parallel`, else in order on this thread.
fn for_each_item<T: Send>(parallel: bool, items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    if parallel {
        items.into_par_iter().for_each(f);
    } else {
        items.into_iter().for_each(f);
    }
}

/// Most dst values in one [`gemm_sum`] task's block (192 KB: with the 144 KB A block, inside a 512 KB L2).
const SUM_DST_BLOCK_VALUES: usize = 48 << 10;

/// dst[m×n] = (accumulate ? dst : 0) + Σ_t a_t · b_t: several products of one shape into one dst (a
/// convolution's taps). Every B panel of every term is packed first, once; then each task keeps its
/// block of dst (MC rows × the column block) in L2 through all terms and depth slices, where one product
/// per term streamed the whole dst once per term and slice. The caller keeps all terms' B small (it is
/// held whole) and k > 0. Views must have been bounds-checked for these shapes.
pub(super) fn gemm_sum<K: MicroKernel, TA: Elem, TB: Elem>(
    kern: &K,
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    d: Strided,
    terms: &[(View<TA>, View<TB>)],
    accumulate: bool,
) {
    let c = DstPtr(dst.as_mut_ptr());
    let threads = threads_for(2 * m * n * k * terms.len());
    let row_blocks = RowBlocks::new::<K>(m, threads);
    let (mc, m_blocks) = (row_blocks.max_rows(), row_blocks.count);
    let slices: Vec<(usize, usize)> = (0..terms.len()).flat_map(|t| (0..k).step_by(K::KC).map(move |pc| (t, pc))).collect();
    let kpad = |pc: usize| K::KC.min(k - pc).next_multiple_of(K::KG);
    let ncb = column_block::<K>(n);
    for jc in (0..n).step_by(ncb) {
        let nc = ncb.min(n - jc);
        let panels = nc.div_ceil(K::NR);
        // Column chunks narrow enough that a task's block of dst stays in L2 beside its A block, and
        // enough tasks for the threads.
        let by_cache = panels.div_ceil((SUM_DST_BLOCK_VALUES / (mc * K::NR)).max(1));
        let by_threads = if m_blocks >= threads { 1 } else { (2 * threads).div_ceil(m_blocks) };
        let n_chunks = by_cache.max(by_threads).min(panels);
        let per_chunk = panels.div_ceil(n_chunks);
        // Every (term, slice)'s B panels, one after another in one buffer, packed in parallel.
        let sizes: Vec<usize> = slices.iter().map(|&(_, pc)| panels * kpad(pc) * K::NR).collect();
        with_buf(&B_BUF, sizes.iter().sum(), |bp: &mut [K::P]| {
            let (parts, offs) = split_parts(bp, &sizes);
            for_each_item(threads > 1, parts.into_iter().zip(&slices).collect(), |(part, &(t, pc))| {
                pack(kern, Side::B, terms[t].1.at(pc, jc).t(), nc, K::KC.min(k - pc), part, false);
            });
            let bp = &*bp;
            let task = |task: usize| {
                let (ib, chunk) = (task / n_chunks, task % n_chunks);
                let ([i0, i1], jp0) = (row_blocks.rows(ib), chunk * per_chunk);
                let mcur = i1 - i0;
                let block = Block { rows: [i0, i1], cols: [jc, jc + nc], panels: [jp0, (jp0 + per_chunk).min(panels)] };
                for (s, &(t, pc)) in slices.iter().enumerate() {
                    let kp = kpad(pc);
                    with_buf(&A_BUF, mcur.div_ceil(K::MR) * kp * K::MR, |ap: &mut [K::P]| {
                        pack(kern, Side::A, terms[t].0.at(i0, pc), mcur, K::KC.min(k - pc), ap, false);
                        // SAFETY: the A block and this slice's B panels are packed kp deep; tasks write
                        // disjoint blocks of dst.
                        unsafe { run_block(kern, kp, ap, &bp[offs[s]..], c, d, &block, accumulate || s > 0) };
                    });
                }
            };
            run_tasks(threads, m_blocks * n_chunks, task);
        });
    }
}

/// Products with at most this many rows (and wider than one task) take [`gemm_shared_a`].
const SHARED_A_ROWS: usize = 640;
/// Most B panels one [`gemm_shared_a`] task packs and multiplies per depth slice (128 f32 columns).
const SHARED_A_PANELS: usize = 8;

/// B panels per [`gemm_shared_a`] task: SHARED_A_PANELS where that splits evenly over the threads, else
/// the widest down to half of it that does. Why: a 1152-wide product in 9 tasks of 8 leaves one thread
/// alone with the ninth (≈ 10 % idle, DiT 512²); 12 tasks of 6 split 6 + 6.
fn shared_a_panels(panels: usize, threads: usize) -> usize {
    (SHARED_A_PANELS / 2..=SHARED_A_PANELS).rev().find(|&p| panels.div_ceil(p).is_multiple_of(threads)).unwrap_or(SHARED_A_PANELS)
}

/// dst = (accumulate ? dst : 0) + a · b for few rows (a Linear on a 300-token prompt or a CFG caption).
/// There, packing B (the weights, streamed from memory) is a large share of the work, and in the
/// shared-B loop it is a phase of its own: both threads pack, wait, multiply, wait, so the memory
/// stream never overlaps arithmetic. Here all of A (small) is packed once up front, then each task
/// owns a few B panels' columns (`shared_a_panels`): per depth slice it packs them and multiplies them
/// by every A panel at once, so one thread's weight reads run while the other computes, with no barrier.
fn gemm_shared_a<K: MicroKernel, TA: Elem, TB: Elem>(
    kern: &K,
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    d: Strided,
    a: View<TA>,
    b: View<TB>,
    accumulate: bool,
) {
    let c = DstPtr(dst.as_mut_ptr());
    let a_panels = m.div_ceil(K::MR);
    let slices: Vec<usize> = (0..k).step_by(K::KC).collect();
    let kpad = |pc: usize| K::KC.min(k - pc).next_multiple_of(K::KG);
    let sizes: Vec<usize> = slices.iter().map(|&pc| a_panels * kpad(pc) * K::MR).collect();
    let threads = threads_for(2 * m * n * k);
    with_buf(&A_SHARED, sizes.iter().sum(), |ap: &mut [K::P]| {
        // Pack A slice by slice, the slices in parallel.
        let (parts, offs) = split_parts(ap, &sizes);
        for_each_item(threads > 1, parts.into_iter().zip(&slices).collect(), |(part, &pc)| {
            pack(kern, Side::A, a.at(0, pc), m, K::KC.min(k - pc), part, false);
        });
        let ap = &*ap;
        let width = shared_a_panels(n.div_ceil(K::NR), threads) * K::NR;
        let task = |chunk: usize| {
            let (j0, j1) = (chunk * width, ((chunk + 1) * width).min(n));
            let panels = (j1 - j0).div_ceil(K::NR);
            let block = Block { rows: [0, m], cols: [j0, j1], panels: [0, panels] };
            for (s, &pc) in slices.iter().enumerate() {
                let kp = kpad(pc);
                with_buf(&B_BUF, panels * kp * K::NR, |bp: &mut [K::P]| {
                    pack(kern, Side::B, b.at(pc, j0).t(), j1 - j0, K::KC.min(k - pc), bp, false);
                    // SAFETY: all A panels and this chunk's B panels are packed kp deep; tasks write
                    // disjoint column ranges of dst.
                    unsafe { run_block(kern, kp, &ap[offs[s]..], bp, c, d, &block, accumulate || s > 0) };
                });
            }
        };
        run_tasks(threads, n.div_ceil(width), task);
    });
}
