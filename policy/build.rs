//! The policy crate's build script: the rpath to `$LIBTORCH/lib` (as `build/rpath.rs` does for
//! the other crates), and `csrc/`, the small C++ shim over libtorch functions tch does not wrap
//! (`ext.cpp`: fused and foreach kernels; `dist.cpp`: c10d's TCPStore and Gloo process group), compiled with `cc`
//! against the same libtorch headers torch-sys uses.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=csrc/ext.cpp");
    println!("cargo:rerun-if-changed=csrc/dist.cpp");
    println!("cargo:rerun-if-changed=csrc/guard.h");
    println!("cargo:rerun-if-changed=csrc/gloo");
    let Ok(root) = std::env::var("LIBTORCH") else {
        panic!("LIBTORCH is not set: run scripts/setup-libtorch.sh (`make setup`), which installs libtorch and links .libtorch, which .cargo/config.toml points LIBTORCH at");
    };
    let root = PathBuf::from(root);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}/lib", root.display());
    let include = root.join("include");
    cc::Build::new()
        .cpp(true)
        .file("csrc/ext.cpp")
        .file("csrc/dist.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        // Declarations of the gloo names c10d's Gloo header mentions (csrc/gloo/names.h).
        .include("csrc")
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag_if_supported("-Wno-unused-parameter")
        .compile("ember_ext");
    println!("cargo:rustc-link-search=native={}/lib", root.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
