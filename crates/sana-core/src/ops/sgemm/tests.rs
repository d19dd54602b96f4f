use super::bf16dot::{self, Bf16Dot, Emulated};
use super::driver::{gemm, Elem, MicroKernel, View};
use super::small;
use super::f32k::{Avx2, Scalar};
use super::*;

/// One way of computing the product: a packed kernel, or the small-m dot-product path.
trait Runner: Sync {
    fn run<T: Elem>(&self, mnk: [usize; 3], dst: &mut [f32], d: Strided, a: View<f32>, b: View<T>, accumulate: bool);
}

struct Packed<K>(K);

impl<K: MicroKernel> Runner for Packed<K> {
    fn run<T: Elem>(&self, mnk: [usize; 3], dst: &mut [f32], d: Strided, a: View<f32>, b: View<T>, accumulate: bool) {
        gemm(&self.0, mnk, dst, d, a, b, accumulate)
    }
}

/// The small-m path, with the AVX2 loop or without.
struct Small(bool);

impl Runner for Small {
    fn run<T: Elem>(&self, mnk: [usize; 3], dst: &mut [f32], d: Strided, a: View<f32>, b: View<T>, accumulate: bool) {
        assert!(small::applies(mnk[0], &a, &b), "a small-path case must have m ≤ {} and contiguous dots", small::SMALL_M);
        small::gemm(self.0, mnk, dst, d, a, b, accumulate)
    }
}

/// Deterministic values in [-1, 1) (xorshift), so a failure reproduces.
pub(super) fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// How a test stores a rows × cols matrix.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Rows,
    Cols,
    /// Row-major, at offset 3 of a buffer whose rows are 5 elements longer than needed.
    Block,
}

impl Layout {
    fn strided(self, rows: usize, cols: usize) -> (Strided, usize) {
        let s = match self {
            Layout::Rows => Strided::rows(0, cols),
            Layout::Cols => Strided { offset: 0, rs: 1, cs: rows },
            Layout::Block => Strided::rows(3, cols + 5),
        };
        (s, last(&s, rows, cols) + 1 + 2)
    }
}

fn at(s: &Strided, i: usize, j: usize) -> usize {
    s.offset + i * s.rs + j * s.cs
}

/// The rhs type a case stores.
#[derive(Debug, Clone, Copy)]
enum RhsType {
    F32,
    Bf16,
    F16,
}

struct Case {
    mnk: [usize; 3],
    layouts: [Layout; 3], // dst, lhs, rhs
    rhs: RhsType,
    accumulate: bool,
}

/// Run `kern` on one case in a pool of `threads` and compare with an f64 reference over the values the
/// kernel actually multiplies (the rhs after its storage rounding; with `bf16_dot`, A and B rounded to
/// bf16 as well). The tolerance is the worst-case f32 summation error, k·ε·Σ|a·b|, plus ε·|dst|.
fn check(kern: &impl Runner, case: &Case, threads: usize, bf16_dot: bool) {
    let [m, n, k] = case.mnk;
    let [dl, ll, rl] = case.layouts;
    let ((d, dlen), (l, llen), (r, rlen)) = (dl.strided(m, n), ll.strided(m, k), rl.strided(k, n));
    let lhs = values(llen, 1 + (m * n * k) as u64);
    let rhs32 = values(rlen, 2 + (m + n + k) as u64);
    let old = values(dlen, 3);
    let mut dst = if case.accumulate { old.clone() } else { vec![f32::NAN; dlen] };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let a = View::new(&lhs[..], l);
    let rhs_used: Vec<f32> = match case.rhs {
        RhsType::F32 => {
            pool.install(|| kern.run([m, n, k], &mut dst, d, a, View::new(&rhs32[..], r), case.accumulate));
            rhs32.clone()
        }
        RhsType::Bf16 => {
            let h: Vec<bf16> = rhs32.iter().map(|&v| bf16::from_f32(v)).collect();
            pool.install(|| kern.run([m, n, k], &mut dst, d, a, View::new(&h[..], r), case.accumulate));
            h.iter().map(|v| v.to_f32()).collect()
        }
        RhsType::F16 => {
            let h: Vec<f16> = rhs32.iter().map(|&v| f16::from_f32(v)).collect();
            pool.install(|| kern.run([m, n, k], &mut dst, d, a, View::new(&h[..], r), case.accumulate));
            h.iter().map(|v| v.to_f32()).collect()
        }
    };
    let round = |v: f32| if bf16_dot { bf16::from_f32(v).to_f32() } else { v };
    let eps = f32::EPSILON as f64;
    for i in 0..m {
        for j in 0..n {
            let (mut want, mut mag) = (0f64, 0f64);
            for p in 0..k {
                let prod = round(lhs[at(&l, i, p)]) as f64 * round(rhs_used[at(&r, p, j)]) as f64;
                want += prod;
                mag += prod.abs();
            }
            let o = at(&d, i, j);
            let base = if case.accumulate { old[o] as f64 } else { 0.0 };
            let got = dst[o] as f64;
            let tol = (k as f64 + 2.0) * eps * mag + 2.0 * eps * base.abs() + 1e-30;
            assert!(
                (got - (want + base)).abs() <= tol,
                "{}×{}×{} {:?} {:?} acc={} threads={threads}: ({i}, {j}) = {got}, want {}",
                m, n, k, case.layouts, case.rhs, case.accumulate, want + base
            );
        }
    }
    // Nothing outside dst's view changed.
    let mut inside = vec![false; dlen];
    (0..m).for_each(|i| (0..n).for_each(|j| inside[at(&d, i, j)] = true));
    for (o, _) in inside.iter().enumerate().filter(|(_, &x)| !x) {
        assert!(dst[o].to_bits() == if case.accumulate { old[o] } else { f32::NAN }.to_bits(), "element {o} outside dst changed");
    }
}

/// Shapes around every blocking edge: 1×1, primes, partial MR/NR tiles, k past KC (256; 576 for the
/// AVX-512 kernel) and not a multiple of 2, m past MC (144; 288), n past NC (3072), and sizes large
/// enough to run on two threads; up to 640 rows with n > 128 take the shared-A loop, the last shape the
/// shared-B loop past a column block.
const SHAPES: [[usize; 3]; 13] = [
    [1, 1, 1],
    [1, 7, 3],
    [5, 1, 9],
    [6, 16, 256],
    [7, 17, 257],
    [13, 31, 300],
    [97, 61, 53],
    [150, 40, 520],
    [2, 3100, 5],
    [200, 300, 260],
    [12, 64, 2],
    [641, 3900, 3],
    [301, 45, 601],
];

fn cases(rhs: RhsType) -> impl Iterator<Item = Case> {
    use Layout::*;
    let layouts = [[Rows, Rows, Rows], [Rows, Rows, Cols], [Cols, Cols, Rows], [Block, Block, Block], [Block, Cols, Cols]];
    SHAPES.into_iter().enumerate().flat_map(move |(s, mnk)| {
        layouts.into_iter().enumerate().map(move |(li, layouts)| Case { mnk, layouts, rhs, accumulate: (s + li) % 2 == 0 })
    })
}

fn check_all(kern: &impl Runner, bf16_dot: bool) {
    for rhs in [RhsType::F32, RhsType::Bf16, RhsType::F16] {
        for case in cases(rhs) {
            for threads in [1, 2] {
                check(kern, &case, threads, bf16_dot);
            }
        }
    }
}

#[test]
fn scalar_kernel_matches_the_reference() {
    check_all(&Packed(Scalar), false);
}

#[test]
fn avx2_kernel_matches_the_reference() {
    match Avx2::new() {
        Some(kern) => check_all(&Packed(kern), false),
        None => eprintln!("SKIP avx2_kernel_matches_the_reference: this CPU lacks avx2/fma"),
    }
}

#[test]
fn avx512_kernel_matches_the_reference() {
    match super::avx512::Avx512::new() {
        Some(kern) => check_all(&Packed(kern), false),
        None => eprintln!("SKIP avx512_kernel_matches_the_reference: this CPU lacks avx512f"),
    }
}

/// The AVX-512 kernel walks each A panel over runs of B panels (`B_RUN_BYTES`): products wide and deep
/// enough for several runs and a partial last one, in both loops (shared-A: 30 rows; shared-B: 650),
/// with a depth past KC so that the second slice's runs are longer.
#[test]
fn avx512_kernel_covers_every_run_of_b_panels() {
    use Layout::*;
    let Some(kern) = super::avx512::Avx512::new().map(Packed) else {
        return eprintln!("SKIP avx512_kernel_covers_every_run_of_b_panels: this CPU lacks avx512f");
    };
    for (i, mnk) in [[30, 1100, 700], [650, 200, 600]].into_iter().enumerate() {
        for layouts in [[Rows, Rows, Cols], [Block, Block, Rows]] {
            let case = Case { mnk, layouts, rhs: RhsType::F32, accumulate: i == 1 };
            for threads in [1, 2] {
                check(&kern, &case, threads, false);
            }
        }
    }
}

#[test]
fn amx_kernel_matches_a_bf16_rounded_reference() {
    match super::amx::Amx::new() {
        Some(kern) => check_all(&Packed(kern), true),
        None => eprintln!("SKIP amx_kernel_matches_a_bf16_rounded_reference: this CPU (or OS) has no AMX-BF16"),
    }
}

#[test]
fn emulated_bf16_dot_kernel_matches_a_bf16_rounded_reference() {
    check_all(&Packed(bf16dot::emulated()), true);
}

#[test]
fn avx512_bf16_kernel_matches_a_bf16_rounded_reference() {
    match bf16dot::avx512() {
        Some(kern) => check_all(&Packed(kern), true),
        None => eprintln!("SKIP avx512_bf16_kernel_matches_a_bf16_rounded_reference: this CPU lacks avx512_bf16"),
    }
}

/// Few-row products in the Linear layout (lhs rows, rhs columns contiguous), around the 4 × 2 register
/// block and the 8-wide loop: m 1…16, n odd and even, k below, at and past multiples of 8.
fn check_small(kern: &Small) {
    use Layout::*;
    for (s, mnk) in [[1, 1, 1], [1, 9, 7], [2, 6912 / 64, 1152], [3, 5, 8], [5, 2, 17], [16, 33, 300], [13, 400, 1000]].into_iter().enumerate() {
        for rhs in [RhsType::F32, RhsType::Bf16, RhsType::F16] {
            for (li, layouts) in [[Rows, Rows, Cols], [Cols, Block, Cols], [Block, Rows, Cols]].into_iter().enumerate() {
                let case = Case { mnk, layouts, rhs, accumulate: (s + li) % 2 == 1 };
                [1, 2].into_iter().for_each(|threads| check(kern, &case, threads, false));
            }
        }
    }
}

#[test]
fn small_m_path_matches_the_reference() {
    check_small(&Small(false));
    match Avx2::new() {
        Some(_) => check_small(&Small(true)),
        None => eprintln!("SKIP small_m_path_matches_the_reference (AVX2 loop): this CPU lacks avx2/fma/f16c"),
    }
}

#[test]
fn emulated_vdpbf16ps_adds_the_odd_pair_first_and_reads_denormals_as_zero() {
    let b = |v: f32| bf16::from_f32(v);
    let mut a = [b(0.0); 32];
    let mut w = [b(1.0); 32];
    // Lane 0: 1 + 2^24 rounds to 2^24 (odd pair first), then − 2^24 gives 0; even-first would give 1.
    (a[1], w[1], a[0], w[0]) = (b(4096.0), b(4096.0), b(-4096.0), b(4096.0));
    // Lane 1: a denormal bf16 input contributes nothing, however large its partner.
    (a[3], w[3]) = (bf16::from_bits(0x0001), b(1e30));
    let got = unsafe {
        let mut out = [0f32; 16];
        Emulated::store(Emulated::dot([1.0; 16], Emulated::load(a.as_ptr()), Emulated::load(w.as_ptr())), out.as_mut_ptr());
        out
    };
    assert_eq!(got[0], 0.0);
    assert_eq!(got[1], 1.0);
    assert_eq!(got[2], 1.0);
}

#[test]
fn sgemm_computes_a_linear_layer_from_inside_rayon_tasks() {
    // y[M, N] = x[M, K] · Wᵀ, W [N, K] bf16, called concurrently from a 2-thread pool's tasks (nested
    // rayon, thread-local buffers), with the kernel this CPU picks.
    use rayon::prelude::*;
    let [m, n, k] = [70, 90, 300];
    let x = values(m * k, 7);
    let w: Vec<bf16> = values(n * k, 8).iter().map(|&v| bf16::from_f32(v)).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let outs: Vec<Vec<f32>> = pool.install(|| {
        (0..6)
            .into_par_iter()
            .map(|_| {
                let mut y = vec![0f32; m * n];
                let r = Strided { offset: 0, rs: 1, cs: k };
                sgemm([m, n, k], (&mut y, Strided::rows(0, n)), (&x, Strided::rows(0, k)), (Rhs::Bf16(&w), r), false);
                y
            })
            .collect()
    });
    let bf16_dot = bf16_rhs_rounds_lhs();
    assert_eq!(bf16_dot, ["avx512bf16", "amx-bf16"].contains(&cpu_gemm_kernel()));
    let round = |v: f32| if bf16_dot { bf16::from_f32(v).to_f32() } else { v };
    for y in &outs {
        for i in 0..m {
            for j in 0..n {
                let (want, mag) = (0..k).fold((0f64, 0f64), |(s, g), p| {
                    let prod = round(x[i * k + p]) as f64 * w[j * k + p].to_f32() as f64;
                    (s + prod, g + prod.abs())
                });
                assert!((y[i * n + j] as f64 - want).abs() <= (k as f64 + 2.0) * f32::EPSILON as f64 * mag);
            }
        }
    }
}

#[test]
fn sgemm_with_k_zero_zeroes_or_keeps_dst() {
    let mut dst = vec![5f32; 6];
    sgemm([2, 3, 0], (&mut dst, Strided::rows(0, 3)), (&[], Strided::rows(0, 0)), (Rhs::F32(&[]), Strided::rows(0, 3)), true);
    assert_eq!(dst, [5.0; 6]);
    sgemm([2, 3, 0], (&mut dst, Strided::rows(0, 3)), (&[], Strided::rows(0, 0)), (Rhs::F32(&[]), Strided::rows(0, 3)), false);
    assert_eq!(dst, [0.0; 6]);
}

#[test]
#[should_panic(expected = "reaches past")]
fn sgemm_refuses_a_view_past_its_slice() {
    let mut dst = vec![0f32; 4];
    sgemm([2, 2, 2], (&mut dst, Strided::rows(1, 2)), (&[0f32; 4], Strided::rows(0, 2)), (Rhs::F16(&[f16::ZERO; 4]), Strided::rows(0, 2)), false);
}

#[test]
fn cpu_gemm_kernel_names_a_kernel_this_cpu_runs() {
    let name = cpu_gemm_kernel();
    assert!(["scalar", "avx2-fma", "avx512f", "avx512bf16", "amx-bf16"].contains(&name), "{name}");
    if name == "avx2-fma" {
        assert!(Avx2::new().is_some());
    }
    if name.starts_with("avx512") {
        assert!(super::avx512::Avx512::new().is_some());
    }
    let _: fn(f32) -> f32 = <f32 as Elem>::to_f32;
}

#[test]
fn sum_of_products_matches_a_reference() {
    // Terms are shifted views of one lhs buffer and slices of one rhs buffer (a conv's taps): k = 300
    // spans two depth slices, m and n end in partial tiles, and m = 20 with 2 threads splits B panels.
    // With `bf16` on a CPU that multiplies bf16 (AMX), the reference rounds both operands to bf16 first.
    for (m, n, k, terms) in [(50usize, 40usize, 300usize, 3usize), (20, 70, 7, 9), (200, 16, 64, 2), (40, 64, 33, 2)] {
        let lhs = values((m + terms) * k, 11);
        let rhs = values(terms * k * n, 12);
        let views: Vec<(Strided, Strided)> = (0..terms).map(|t| (Strided::rows(t * k, k), Strided::rows(t * k * n, n))).collect();
        for (accumulate, bf16) in [(false, false), (true, false), (false, true), (true, true)] {
            let rounds = bf16 && bf16_rhs_rounds_lhs();
            let round = |v: f32| if rounds { half::bf16::from_f32(v).to_f32() as f64 } else { v as f64 };
            let init = values(m * n, 13);
            let mut dst = init.clone();
            let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
            pool.install(|| sgemm_sum([m, n, k], (&mut dst, Strided::rows(0, n)), &lhs, &rhs, &views, accumulate, bf16));
            for i in 0..m {
                for j in 0..n {
                    let mut want = if accumulate { init[i * n + j] as f64 } else { 0.0 };
                    for t in 0..terms {
                        for p in 0..k {
                            want += round(lhs[(i + t) * k + p]) * round(rhs[t * k * n + p * n + j]);
                        }
                    }
                    let got = dst[i * n + j] as f64;
                    assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "{:?} ({i}, {j}): {got} vs {want}", (m, n, k, terms, accumulate, bf16));
                }
            }
        }
    }
}

#[test]
fn f32_product_in_bf16_matches_a_rounded_reference() {
    // sgemm_f32 (im2col convs of a bf16 model): a row-major f32 rhs with an odd depth, accumulated.
    let (m, n, k) = (70usize, 100usize, 45usize);
    let (lhs, rhs, init) = (values(m * k, 21), values(k * n, 22), values(m * n, 23));
    for bf16 in [false, true] {
        let rounds = bf16 && bf16_rhs_rounds_lhs();
        let round = |v: f32| if rounds { half::bf16::from_f32(v).to_f32() as f64 } else { v as f64 };
        let mut dst = init.clone();
        sgemm_f32([m, n, k], (&mut dst, Strided::rows(0, n)), (&lhs, Strided::rows(0, k)), (&rhs, Strided::rows(0, n)), true, bf16);
        for i in 0..m {
            for j in 0..n {
                let want = init[i * n + j] as f64 + (0..k).map(|p| round(lhs[i * k + p]) * round(rhs[p * n + j])).sum::<f64>();
                let got = dst[i * n + j] as f64;
                assert!((got - want).abs() < 1e-5 * (1.0 + want.abs()), "bf16={bf16} ({i}, {j}): {got} vs {want}");
            }
        }
    }
}

/// One panel packed by the bf16-dot kernel's packer and by the driver's generic loop (`pack_panel`), as raw bits: lanes `stride`
/// apart and contiguous along k, or with `across`, depth steps `stride` apart and lanes contiguous.
#[cfg(target_arch = "x86_64")]
fn pack_pairs_both<T: Elem>(side: super::driver::Side, across: bool, src: &[T], lanes: usize, stride: usize, kc: usize) -> [Vec<u16>; 2] {
    let kern = bf16dot::avx512().expect("avx512_bf16");
    let strides = if across { [1, stride] } else { [stride, 1] };
    assert!(src.len() > (lanes - 1) * strides[0] + (kc - 1) * strides[1]);
    let len = kc.next_multiple_of(2) * lanes;
    let (mut got, mut want) = (vec![half::bf16::from_bits(0xFFFF); len], vec![half::bf16::ZERO; len]);
    // SAFETY: the panel's values are readable at src (asserted); each output holds the whole panel.
    let packed = unsafe {
        if across { kern.pack_across(side, src.as_ptr(), stride, kc, &mut got) } else { kern.pack_contiguous(side, src.as_ptr(), stride, kc, &mut got) }
    };
    assert!(packed, "no fast packer for this panel");
    let view = View::new(src, Strided { offset: 0, rs: strides[0], cs: strides[1] });
    super::driver::pack_panel(view, lanes, kc, lanes, [2, kc.next_multiple_of(2)], &mut want);
    [got, want].map(|v| v.iter().map(|x| x.to_bits()).collect())
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_bf16_pair_packer_matches_the_generic_loop_bit_for_bit() {
    // The vectorised k-pair packer (both sides, each rhs type) against the scalar loop it replaces: same
    // rounding (ties to even, NaN made quiet with its sign), same zero partner for an odd depth, across
    // whole 16-value blocks and the scalar tail.
    use super::driver::Side;
    if bf16dot::avx512().is_none() {
        return eprintln!("SKIP avx512_bf16_pair_packer_matches_the_generic_loop_bit_for_bit: this CPU lacks avx512_bf16");
    }
    let specials = [
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7F80_0001), // a signalling NaN
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::from_bits(0x3F80_8000), // a tie, rounds down to even
        f32::from_bits(0x3F81_8000), // a tie, rounds up to even
        f32::from_bits(0x3F80_8001),
        f32::from_bits(0x0000_0001), // denormals
        f32::from_bits(0x807F_FFFF),
        -0.0,
    ];
    // A row-major B (lanes contiguous) has its own packer; a column-major A keeps the generic loop.
    for (side, lanes, across) in [(Side::A, 12usize, false), (Side::B, 32usize, false), (Side::B, 32usize, true)] {
        for kc in [1usize, 2, 15, 16, 17, 31, 32, 33, 100] {
            let stride = if across { lanes + 5 } else { kc + 3 };
            let mut src = values(if across { kc * stride } else { lanes * stride }, (kc * lanes) as u64);
            let n = src.len();
            for (i, v) in specials.iter().enumerate() {
                src[(i * 37) % n] = *v;
            }
            let [got, want] = pack_pairs_both(side, across, &src, lanes, stride, kc);
            assert_eq!(got, want, "f32, {lanes} lanes, depth {kc}, across {across}");
            let b: Vec<_> = src.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let [got, want] = pack_pairs_both(side, across, &b, lanes, stride, kc);
            assert_eq!(got, want, "bf16, {lanes} lanes, depth {kc}, across {across}");
            let h: Vec<_> = src.iter().map(|&v| half::f16::from_f32(v)).collect();
            let [got, want] = pack_pairs_both(side, across, &h, lanes, stride, kc);
            assert_eq!(got, want, "f16, {lanes} lanes, depth {kc}, across {across}");
        }
    }
}

/// The f32 fast packers (the AVX2 kernel's 6-row A and 16-column B panels, the AVX-512 kernel's 12-row A
/// panel) against the driver's generic loop, bit for bit, for each rhs type; and nothing written past the
/// panel (the 8-lane stores of a 6- or 12-lane panel overlap the next depth step).
#[cfg(target_arch = "x86_64")]
#[test]
fn f32_panel_packers_match_the_generic_loop_and_stay_inside_the_panel() {
    use super::driver::Side;
    use super::f32k::pack_a_rows12_avx2;
    let Some(kern) = Avx2::new() else {
        return eprintln!("SKIP f32_panel_packers_match_the_generic_loop_and_stay_inside_the_panel: this CPU lacks avx2");
    };
    fn both<T: Elem>(src: &[T], lanes: usize, stride: usize, kc: usize, fast: impl FnOnce(&mut [f32])) -> [Vec<u32>; 2] {
        const GUARD: usize = 16;
        let mut got = vec![f32::from_bits(0x7FC0_1234); kc * lanes + GUARD];
        fast(&mut got[..kc * lanes]);
        assert!(got[kc * lanes..].iter().all(|g| g.to_bits() == 0x7FC0_1234), "{lanes} lanes, depth {kc}: written past the panel");
        let mut want = vec![0f32; kc * lanes];
        super::driver::pack_panel(View::new(src, Strided { offset: 0, rs: stride, cs: 1 }), lanes, kc, lanes, [1, kc], &mut want);
        [got[..kc * lanes].to_vec(), want].map(|v| v.iter().map(|x| x.to_bits()).collect())
    }
    fn check<T: Elem>(kern: &Avx2, src: &[T], stride: usize, kc: usize) {
        // SAFETY (each call): `lanes` rows of kc values lie `stride` apart in src (the caller sized it); the
        // output slice holds exactly the panel; this CPU has avx2 (the kernel exists).
        for (side, lanes) in [(Side::A, 6usize), (Side::B, 16)] {
            let [got, want] = both(src, lanes, stride, kc, |o| assert!(unsafe { kern.pack_contiguous(side, src.as_ptr(), stride, kc, o) }));
            assert_eq!(got, want, "{lanes} lanes, depth {kc}");
        }
        let [got, want] = both(src, 12, stride, kc, |o| unsafe { pack_a_rows12_avx2(src.as_ptr(), stride, kc, o.as_mut_ptr()) });
        assert_eq!(got, want, "12 lanes, depth {kc}");
    }
    for kc in [1usize, 7, 8, 9, 15, 16, 17, 24, 100] {
        let stride = kc + 3;
        let src = values(16 * stride, kc as u64);
        check(&kern, &src, stride, kc);
        check(&kern, &src.iter().map(|&v| half::bf16::from_f32(v)).collect::<Vec<_>>(), stride, kc);
        check(&kern, &src.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>(), stride, kc);
    }
}

/// Row blocks cover every row once, on MR-aligned boundaries, each within MC, as many as a multiple of
/// the threads (where the panels allow), and the two threads' contiguous halves within one panel of
/// each other.
#[test]
fn row_blocks_split_rows_evenly_on_panel_boundaries() {
    use super::driver::RowBlocks;
    fn check<K: MicroKernel>(m: usize, threads: usize) {
        let rb = RowBlocks::new::<K>(m, threads);
        let bounds: Vec<[usize; 2]> = (0..rb.count).map(|i| rb.rows(i)).collect();
        assert_eq!(bounds.first().map(|b| b[0]), Some(0), "m {m}");
        assert_eq!(bounds.last().map(|b| b[1]), Some(m), "m {m}");
        for w in bounds.windows(2) {
            assert_eq!(w[0][1], w[1][0], "m {m}: blocks must abut");
        }
        for &[i0, i1] in &bounds {
            assert!(i0 % K::MR == 0 && (i1 % K::MR == 0 || i1 == m), "m {m}: block {i0}..{i1} off the MR grid");
            assert!(i1 - i0 <= K::MC && i1 - i0 <= rb.max_rows(), "m {m}: block {i0}..{i1} above MC {}", K::MC);
            assert!(m == 0 || i1 > i0, "m {m}: an empty block");
        }
        let panels = m.div_ceil(K::MR);
        if panels >= threads && threads == 2 {
            assert_eq!(rb.count % threads, 0, "m {m}: {} blocks for {threads} threads", rb.count);
            let half = |r: std::ops::Range<usize>| -> usize { r.map(|i| bounds[i][1] - bounds[i][0]).sum() };
            let (first, second) = (half(0..rb.count / 2), half(rb.count / 2..rb.count));
            assert!(first.abs_diff(second) <= K::MR, "m {m}: halves of {first} and {second} rows");
        }
    }
    for m in [0, 1, 5, 12, 13, 200, 288, 289, 600, 1000, 2048, 4096, 8192, 31354] {
        check::<super::avx512::Avx512>(m, 2);
        check::<Avx2>(m, 2);
        check::<bf16dot::DotKernel<Emulated>>(m, 2);
        check::<super::amx::Amx>(m, 2);
        check::<super::avx512::Avx512>(m, 1);
    }
    // The DiT's 2048 rows on the 12-row AVX-512 tile: 8 blocks, halves of 1020 and 1028 rows (equal
    // 264-row blocks gave 1056 and 992).
    let rb = RowBlocks::new::<super::avx512::Avx512>(2048, 2);
    assert_eq!(rb.count, 8);
    assert_eq!(rb.rows(3)[1], 1020);
}
