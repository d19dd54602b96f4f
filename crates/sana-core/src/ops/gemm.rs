//! `dst += lhs · rhs` on strided f32 slices, for ops whose result lands in a block of a larger buffer
//! (conv2d writes each band straight into its output rows), through our GEMM ([`super::sgemm`]; until
//! issue 13 the `gemm` crate that candle's CPU matmul uses, at ≈ 2/3 of the speed on DC-AE's shapes).
//! The bounds are checked here, once, so the callers stay safe code.

/// Where a matrix lies in a slice: element (i, j) at `offset + i·rs + j·cs` (strides in elements).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strided {
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Strided {
    /// A row-major matrix at `offset` with rows `rs` apart.
    pub fn rows(offset: usize, rs: usize) -> Self {
        Strided { offset, rs, cs: 1 }
    }

    /// Index of element (rows − 1, cols − 1), the furthest one for non-negative strides.
    fn last(&self, rows: usize, cols: usize) -> usize {
        self.offset + (rows - 1) * self.rs + (cols - 1) * self.cs
    }
}

/// dst[m × n] += lhs[m × k] · rhs[k × n], multithreaded on rayon's pool; `bf16` as for [`gemm_sum`].
/// Panics if a view reaches past its slice.
pub(crate) fn gemm_acc(
    [m, n, k]: [usize; 3],
    (dst, d): (&mut [f32], Strided),
    (lhs, l): (&[f32], Strided),
    (rhs, r): (&[f32], Strided),
    bf16: bool,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        d.last(m, n) < dst.len() && l.last(m, k) < lhs.len() && r.last(k, n) < rhs.len(),
        "gemm_acc: a {m}×{n}×{k} product reaches past its buffers ({d:?}, {l:?}, {r:?})"
    );
    super::sgemm::sgemm_f32([m, n, k], (dst, d), (lhs, l), (rhs, r), true, bf16);
}

/// dst[m × n] = lhs[m × k] · rhs[k × n] on the calling thread alone (dst's old contents are not read),
/// for callers whose own rayon tasks are the parallelism; `bf16` as for [`gemm_sum`].
/// Panics if a view reaches past its slice.
pub(crate) fn gemm_serial(mnk: [usize; 3], dst: (&mut [f32], Strided), lhs: (&[f32], Strided), rhs: (&[f32], Strided), bf16: bool) {
    super::sgemm::serial(|| super::sgemm::sgemm_f32(mnk, dst, lhs, rhs, false, bf16));
}

/// dst[m × n] = Σ_t lhs(t) · rhs(t) (a convolution's taps), each term a strided view pair of the shared
/// slices, with dst kept in cache across the terms; dst's old contents are not read. `bf16`: bf16
/// products are acceptable (a bf16 model), used where the CPU multiplies them on AMX.
/// Panics if a view reaches past its slice.
pub(crate) fn gemm_sum(mnk: [usize; 3], dst: (&mut [f32], Strided), lhs: &[f32], rhs: &[f32], terms: &[(Strided, Strided)], bf16: bool) {
    super::sgemm::sgemm_sum(mnk, dst, lhs, rhs, terms, false, bf16);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulates_a_strided_product_into_a_block() {
        // dst: a 2×3 block at (1, 1) of a 4×5 buffer of ones; lhs: 2×2 transposed view; rhs: 2×3 row-major.
        let mut dst = vec![1f32; 20];
        let lhs = [1f32, 2., 3., 4.]; // lhs as stored [[1, 2], [3, 4]], used transposed: [[1, 3], [2, 4]]
        let rhs = [1f32, 0., 2., 0., 1., 3.];
        gemm_acc([2, 3, 2], (&mut dst, Strided::rows(6, 5)), (&lhs, Strided { offset: 0, rs: 1, cs: 2 }), (&rhs, Strided::rows(0, 3)), false);
        let want_block = [[2f32, 4., 12.], [3., 5., 17.]]; // 1 + [[1, 3, 11], [2, 4, 16]]
        for (i, row) in want_block.iter().enumerate() {
            assert_eq!(&dst[6 + i * 5..6 + i * 5 + 3], row);
        }
        assert_eq!(dst.iter().filter(|&&v| v == 1.0).count(), 14, "only the block changed");
    }

    #[test]
    #[should_panic(expected = "reaches past")]
    fn refuses_a_view_past_its_slice() {
        let mut dst = vec![0f32; 4];
        gemm_acc([2, 2, 2], (&mut dst, Strided::rows(1, 2)), (&[0f32; 4], Strided::rows(0, 2)), (&[0f32; 4], Strided::rows(0, 2)), false);
    }
}
