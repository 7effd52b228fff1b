//! Device selection. tch only sees CUDA once `libtorch_cuda.so` is loaded into the process, so
//! asking for `cuda` dlopens it first from `EMBER_TORCH_CUDA_LIB` (a file or a directory),
//! `LD_LIBRARY_PATH`, `$LIBTORCH/lib`, or the `torch/lib` directory of the local python.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tch::Device;

use crate::error::{PolicyError, Result};

/// `--device cpu|cuda|auto`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceArg {
    Cpu,
    Cuda,
    Auto,
}

impl std::str::FromStr for DeviceArg {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "auto" => Ok(Self::Auto),
            other => Err(PolicyError::Device(format!(
                "unknown device {other:?}: expected cpu, cuda or auto"
            ))),
        }
    }
}

/// Turns the flag into a device, loading the CUDA libraries when needed.
pub fn resolve(arg: DeviceArg) -> Result<Device> {
    match arg {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => {
            let loaded = load_cuda()?;
            if !tch::Cuda::is_available() {
                return Err(PolicyError::Device(format!(
                    "loaded {} but libtorch sees no CUDA device",
                    loaded.display()
                )));
            }
            Ok(Device::Cuda(0))
        }
        DeviceArg::Auto => match load_cuda() {
            Ok(_) if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            _ => Ok(Device::Cpu),
        },
    }
}

/// `resolve` for the `device` string of a run config.
pub fn resolve_str(s: &str) -> Result<Device> {
    resolve(s.parse()?)
}

/// dlopens `libtorch_cuda.so` once; returns the path that was loaded.
pub fn load_cuda() -> Result<PathBuf> {
    static LOADED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let candidates = cuda_candidates();
            for path in &candidates {
                if path.is_file() && dlopen(path) {
                    return Ok(path.clone());
                }
            }
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            Err(format!(
                "libtorch_cuda.so not found or not loadable (tried: {}); set \
                 EMBER_TORCH_CUDA_LIB to the file or its directory",
                if tried.is_empty() {
                    "nothing".to_string()
                } else {
                    tried.join(", ")
                }
            ))
        })
        .clone()
        .map_err(PolicyError::Device)
}

fn cuda_candidates() -> Vec<PathBuf> {
    const LIB: &str = "libtorch_cuda.so";
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    if let Ok(p) = std::env::var("EMBER_TORCH_CUDA_LIB") {
        let p = PathBuf::from(p);
        if p.is_dir() {
            dirs.push(p);
        } else {
            out.push(p);
        }
    }
    if let Ok(paths) = std::env::var("LD_LIBRARY_PATH") {
        dirs.extend(
            paths
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        );
    }
    if let Ok(root) = std::env::var("LIBTORCH") {
        dirs.push(Path::new(&root).join("lib"));
    }
    if let Some(dir) = python_torch_lib() {
        dirs.push(dir);
    }
    out.extend(dirs.into_iter().map(|d| d.join(LIB)));
    out
}

fn python_torch_lib() -> Option<PathBuf> {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, torch; print(os.path.dirname(torch.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    Some(Path::new(dir.trim()).join("lib"))
}

fn dlopen(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().to_string_lossy().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; dlopen has no other preconditions. The
    // handle is deliberately leaked: the library stays loaded for the process lifetime.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    !handle.is_null()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_strings() {
        assert_eq!("cpu".parse::<DeviceArg>().unwrap(), DeviceArg::Cpu);
        assert_eq!("auto".parse::<DeviceArg>().unwrap(), DeviceArg::Auto);
        assert!("gpu".parse::<DeviceArg>().is_err());
        assert_eq!(resolve(DeviceArg::Cpu).unwrap(), Device::Cpu);
    }
}
