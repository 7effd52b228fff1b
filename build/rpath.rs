//! Build script shared by the crates that link libtorch: records an rpath to `$LIBTORCH/lib`, so
//! binaries and test executables find libtorch without `LD_LIBRARY_PATH`. `LIBTORCH` is set by
//! `.cargo/config.toml` to the `.libtorch` link that `scripts/setup-libtorch.sh` creates.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(root) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{root}/lib");
    }
}
