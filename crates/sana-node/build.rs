fn main() {
    napi_build::setup();
    // The CUDA variant links libcublas/libcurand/libnvrtc (candle's cudarc uses dynamic linking): let it
    // find the wheel-installed ones from scripts/setup-cuda.sh next to a repo-root .node. A system CUDA
    // 13 install is found through ld.so as usual; the driver (libcuda.so.1) always comes from the system.
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,$ORIGIN/.cuda/lib");
    }
}
