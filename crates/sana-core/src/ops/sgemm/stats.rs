//! Where GEMM time goes, by shape: with `SANA_GEMM_STATS=1` every [`super::sgemm`] call is timed and
//! summed per (m, n, k, strides, rhs width); [`sgemm_stats_report`] prints the table (the profiling
//! examples call it). Off, a call costs one load of a cached flag.
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

type Key = ([usize; 3], [usize; 6], usize);

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("SANA_GEMM_STATS").is_ok_and(|v| v == "1"))
}

fn table() -> &'static Mutex<HashMap<Key, (usize, f64)>> {
    static T: OnceLock<Mutex<HashMap<Key, (usize, f64)>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// Adds its lifetime to its shape's row when dropped (when stats are on).
pub(super) struct Timer(Option<(Key, Instant)>);

impl Timer {
    pub fn start(mnk: [usize; 3], strides: [usize; 6], rhs_bytes: usize) -> Self {
        Timer(enabled().then(|| ((mnk, strides, rhs_bytes), Instant::now())))
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some((key, t0)) = self.0.take() {
            let mut t = table().lock().unwrap();
            let e = t.entry(key).or_default();
            e.0 += 1;
            e.1 += t0.elapsed().as_secs_f64();
        }
    }
}

/// The per-shape table (calls, seconds, GFLOP/s), slowest first; empty unless `SANA_GEMM_STATS=1`.
pub fn sgemm_stats_report() -> String {
    let t = table().lock().unwrap();
    let mut rows: Vec<_> = t.iter().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    let total: f64 = rows.iter().map(|r| r.1 .1).sum();
    let mut out = format!("GEMM total {total:.2} s wall\n{:<22} {:<28} {:>2} {:>7} {:>8} {:>7}\n", "m×n×k", "strides lhs rhs dst", "B", "calls", "s", "GFLOP/s");
    for ((mnk, st, bytes), (calls, secs)) in rows {
        let gf = 2.0 * (mnk[0] * mnk[1] * mnk[2]) as f64 * *calls as f64 / secs / 1e9;
        out += &format!("{:<22} {:<28} {:>2} {:>7} {:>8.3} {:>7.1}\n", format!("{}×{}×{}", mnk[0], mnk[1], mnk[2]), format!("{st:?}"), bytes, calls, secs, gf);
    }
    out
}
