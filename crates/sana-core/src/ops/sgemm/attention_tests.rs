//! One head through [`attend_packed`] (via [`attend`]) on every kernel this CPU runs (and the emulated
//! bf16-dot one) against an f64 reference: rows, keys and head dims below, at and past the panel sizes
//! and the query group, masked keys, the output inside a wider buffer or column-major, and K/V in f32 or
//! bf16. The multi-head entry (`attend_all`) is covered by `ops/cross_attention.rs`'s tests.
use super::*;
use crate::ops::sgemm::{amx, avx512, bf16dot, f32k};
use half::bf16;

/// The operands of [`attend`]: `q` rows × hd, `kt` hd × keys (K transposed: element (i, j) = k[j, i]),
/// `v` keys × hd, `o` rows × hd (written, not read), `bias` keys additive values or none.
struct Head<'a, T> {
    q: View<'a, f32>,
    kt: View<'a, T>,
    v: View<'a, T>,
    o: *mut f32,
    os: Strided,
    bias: Option<&'a [f32]>,
}

/// One head: its K and V packed, then [`attend_packed`]. Safety: as `attend_packed`'s.
unsafe fn attend<K: MicroKernel, T: Elem>(kern: &K, [rows, keys, hd]: [usize; 3], h: &Head<T>, scale: f32) {
    with_buf(&KV, kv_len::<K>(keys, hd), |kv: &mut [K::P]| {
        pack_kv(kern, [keys, hd], h.kt, h.v, kv);
        attend_packed(kern, [rows, keys, hd], kv, h.q, (h.o, h.os), h.bias, scale)
    })
}

/// Deterministic values in [-2, 2), so a failure reproduces.
fn values(len: usize, seed: u64) -> Vec<f32> {
    crate::ops::sgemm::tests::values(len, seed).into_iter().map(|x| 2.0 * x).collect()
}

/// o[r, i] = Σ_j softmax_j(q[r] · k[j] · scale + bias[j]) v[j, i] in f64; q, k, v row-major.
fn reference(q: &[f32], k: &[f32], v: &[f32], [rows, keys, hd]: [usize; 3], scale: f32, bias: Option<&[f32]>) -> Vec<f64> {
    let mut o = vec![0f64; rows * hd];
    for r in 0..rows {
        let z: Vec<f64> = (0..keys)
            .map(|j| {
                let dot: f64 = (0..hd).map(|i| q[r * hd + i] as f64 * k[j * hd + i] as f64).sum();
                dot * scale as f64 + bias.map_or(0.0, |b| b[j] as f64)
            })
            .collect();
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|z| (z - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        for i in 0..hd {
            o[r * hd + i] = (0..keys).map(|j| e[j] * v[j * hd + i] as f64).sum::<f64>() / sum;
        }
    }
    o
}

/// [`attend`] on `kern` for every case, K/V stored as `T`; `bf16_math`: the kernel rounds q and the
/// exponentials to bf16 (bf16-sized errors), else the f32 tolerance.
fn check<K: MicroKernel, T: Elem>(kern: &K, name: &str, to_t: fn(f32) -> T, bf16_math: bool) {
    let shapes = [[1, 1, 1], [13, 5, 7], [7, 40, 16], [50, 37, 24], [130, 300, 72], [301, 300, 72]];
    for (case, &[rows, keys, hd]) in shapes.iter().enumerate() {
        let seed = case as u64 * 10;
        let q = values(rows * hd, seed + 1);
        let (k, v): (Vec<T>, Vec<T>) = (values(keys * hd, seed + 2).into_iter().map(to_t).collect(), values(keys * hd, seed + 3).into_iter().map(to_t).collect());
        let (kf, vf): (Vec<f32>, Vec<f32>) = (k.iter().map(|x| x.to_f32()).collect(), v.iter().map(|x| x.to_f32()).collect());
        let mask: Vec<f32> = (0..keys).map(|j| if j % 5 == 2 && keys > 1 { crate::ops::cross_attention::MASK_BIAS } else { 0.1 * (j % 3) as f32 }).collect();
        let scale = 1.0 / (hd as f32).sqrt();
        for bias in [None, Some(&mask[..])] {
            let want = reference(&q, &kf, &vf, [rows, keys, hd], scale, bias);
            // The output in a wider row-major buffer at an offset, or column-major.
            for os in [Strided::rows(3, hd + 5), Strided { offset: 0, rs: 1, cs: rows }] {
                let mut o = vec![f32::NAN; os.offset + (rows - 1) * os.rs + (hd - 1) * os.cs + 1];
                let head = Head {
                    q: View::new(&q, Strided::rows(0, hd)),
                    kt: View::new(&k, Strided { offset: 0, rs: 1, cs: hd }),
                    v: View::new(&v, Strided::rows(0, hd)),
                    o: o.as_mut_ptr(),
                    os,
                    bias,
                };
                // SAFETY: the views cover their buffers for this shape; `o` holds rows × hd through os.
                unsafe { attend(kern, [rows, keys, hd], &head, scale) };
                let tol = if bf16_math { 3e-2 } else { 2e-5 };
                for r in 0..rows {
                    for i in 0..hd {
                        let got = o[os.offset + r * os.rs + i * os.cs];
                        let err = (got as f64 - want[r * hd + i]).abs();
                        assert!(err < tol, "{name}: {rows}×{keys}×{hd}, bias {}, {os:?}: o[{r}, {i}] = {got}, want {}", bias.is_some(), want[r * hd + i]);
                    }
                }
            }
        }
    }
}

fn bf16_of(x: f32) -> bf16 {
    bf16::from_f32(x)
}

#[test]
fn scalar_kernel_attends_as_the_reference() {
    check(&f32k::Scalar, "scalar", |x| x, false);
    check(&f32k::Scalar, "scalar, bf16 K/V widened", bf16_of, false);
}

#[test]
fn avx2_kernel_attends_as_the_reference() {
    let Some(kern) = f32k::Avx2::new() else { return eprintln!("SKIP avx2_kernel_attends_as_the_reference: this CPU lacks avx2/fma") };
    check(&kern, "avx2", |x| x, false);
    check(&kern, "avx2, bf16 K/V widened", bf16_of, false);
}

#[test]
fn avx512_kernel_attends_as_the_reference() {
    let Some(kern) = avx512::Avx512::new() else { return eprintln!("SKIP avx512_kernel_attends_as_the_reference: this CPU lacks avx512f") };
    check(&kern, "avx512", |x| x, false);
    check(&kern, "avx512, bf16 K/V widened", bf16_of, false);
}

#[test]
fn bf16_kernels_attend_as_the_reference_within_bf16_rounding() {
    check(&bf16dot::emulated(), "emulated bf16 dot", bf16_of, true);
    match bf16dot::avx512() {
        Some(kern) => check(&kern, "avx512bf16", bf16_of, true),
        None => eprintln!("SKIP the avx512bf16 part: this CPU lacks avx512_bf16"),
    }
    match amx::Amx::new() {
        Some(kern) => check(&kern, "amx-bf16", bf16_of, true),
        None => eprintln!("SKIP the amx-bf16 part: this CPU (or OS) has no AMX-BF16"),
    }
}

#[test]
fn the_entry_point_checks_its_views() {
    // A K slice one element short of its shape, and a key count past S, are refused before any kernel
    // reads them.
    let (q, k, v) = (vec![0f32; 4 * 8], vec![0f32; 3 * 8 - 1], vec![0f32; 3 * 8]);
    for (k, keys) in [(&k[..], 3), (&v[..], 4)] {
        let mut o = vec![0f32; 4 * 8];
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            use crate::ops::sgemm::Rhs;
            crate::ops::sgemm::attention_heads([1, 4, 1, 3, 8], &mut o, &q, (Rhs::F32(k), Rhs::F32(&v)), 1.0, None, &[keys], 4)
        }));
        assert!(r.is_err(), "keys {keys}");
    }
}
