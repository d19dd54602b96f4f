//! Size checks before large allocations. Rust's `Vec`/candle allocations are infallible: a request the
//! system refuses calls `handle_alloc_error`, which aborts the whole process (and Node with it). Buffers
//! whose size follows from user input (sequence length, image size) are checked here first, so an absurd
//! size becomes a `SanaError` instead.

use crate::{Result, SanaError};

/// Bytes of `dims` elements of `elem_bytes` each, or None when the product overflows.
pub fn buffer_bytes(dims: &[usize], elem_bytes: usize) -> Option<usize> {
    dims.iter().try_fold(elem_bytes, |acc, &d| acc.checked_mul(d))
}

/// Check that a buffer of `dims` × `elem_bytes` can be allocated: the size must not overflow and the
/// allocator must grant it. The probe reserves the bytes and frees them at once (on Linux an mmap of
/// untouched pages, so no RAM is used); it catches what can never fit (terabytes), not memory pressure.
/// `arg` names the input whose size caused it, `what` the buffer.
/// Example: `ensure_allocatable("inputIds", "attention logits", &[h, l, l], 4)?`.
pub fn ensure_allocatable(arg: &str, what: &str, dims: &[usize], elem_bytes: usize) -> Result<()> {
    let Some(bytes) = buffer_bytes(dims, elem_bytes) else {
        return Err(too_large(arg, what, dims, None));
    };
    // Below 256 MiB a refusal is memory pressure, not a size mistake; don't pay for the probe.
    if bytes < 256 << 20 {
        return Ok(());
    }
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(bytes).map_err(|_| too_large(arg, what, dims, Some(bytes)))
}

/// `vec![0f32; n]` that returns an error instead of aborting when the allocation is refused.
pub fn try_zeros_f32(arg: &str, what: &str, dims: &[usize]) -> Result<Vec<f32>> {
    let n = buffer_bytes(dims, 1).ok_or_else(|| too_large(arg, what, dims, None))?;
    let mut v: Vec<f32> = Vec::new();
    v.try_reserve_exact(n).map_err(|_| too_large(arg, what, dims, n.checked_mul(4)))?;
    v.resize(n, 0.0);
    Ok(v)
}

fn too_large(arg: &str, what: &str, dims: &[usize], bytes: Option<usize>) -> SanaError {
    let size = match bytes {
        Some(b) => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        None => "more bytes than a pointer can address".into(),
    };
    SanaError::invalid_arg(arg, format!("the {what} {dims:?} would need {size}, more than this machine can allocate; use a smaller size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_buffers_pass_and_absurd_ones_are_errors() {
        assert!(ensure_allocatable("x", "buffer", &[1024, 1024], 4).is_ok());
        // 2⁴⁰ f32 = 4 TiB: refused by the allocator, reported instead of aborting.
        let e = ensure_allocatable("inputIds", "attention logits", &[1 << 20, 1 << 20], 4).unwrap_err();
        assert_eq!(e.code(), "SANA_INVALID_ARGUMENT");
        assert!(e.to_string().contains("inputIds") && e.to_string().contains("4096.0 GiB"), "{e}");
        // Overflowing usize.
        let e = ensure_allocatable("width", "image", &[usize::MAX, 2], 4).unwrap_err();
        assert!(e.to_string().contains("pointer"), "{e}");
        assert!(try_zeros_f32("w", "acc", &[1 << 30, 1 << 12]).is_err());
        assert_eq!(try_zeros_f32("w", "acc", &[3, 2]).unwrap(), vec![0.0; 6]);
    }
}
