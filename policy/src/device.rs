//! Device selection. tch only sees CUDA once `libtorch_cuda.so` is loaded into the process, so
//! asking for `cuda` dlopens it first from `EMBER_TORCH_CUDA_LIB` (a file or a directory),
//! `LD_LIBRARY_PATH`, `$LIBTORCH/lib`, or the `torch/lib` directory of the local python.
//!
//! `--precision bf16` runs the model under libtorch's autocast with bfloat16 as the reduced
//! type (matmuls and attention in bf16, reductions, softmax and losses in fp32, weights and
//! optimizer state in fp32), as `torch.autocast("cuda", dtype=torch.bfloat16)` does.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tch::{Device, Kind};

use crate::error::{PolicyError, Result};

/// `--device cpu|cuda|auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Auto => "auto",
        })
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

/// `--precision fp32|bf16`: the arithmetic a model runs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32.
    #[default]
    Fp32,
    /// bf16 autocast (CUDA only); weights, gradients and optimizer state stay float32.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fp32" => Ok(Self::Fp32),
            "bf16" => Ok(Self::Bf16),
            other => Err(PolicyError::Device(format!(
                "unknown precision {other:?}: expected fp32 or bf16"
            ))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
        })
    }
}

impl Precision {
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    /// The type matmuls run in.
    pub fn kind(self) -> Kind {
        match self {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }

    /// The autocast scope this precision asks for on `device`; a usage error for bf16 off
    /// CUDA (CPU autocast runs, but without bf16 units it is slower than fp32, not faster).
    pub fn enter(self, device: Device) -> Result<Option<Autocast>> {
        match (self, device) {
            (Precision::Fp32, _) => Ok(None),
            (Precision::Bf16, Device::Cuda(_)) => Ok(Some(Autocast::enter(device, self.kind()))),
            (Precision::Bf16, other) => Err(PolicyError::Device(format!(
                "precision bf16 is bf16 autocast on CUDA, but the device is {other:?}: use \
                 --device cuda, or precision fp32"
            ))),
        }
    }
}

// libtorch's own autocast switches (c10/aten `autocast_mode.h`). tch 0.24 wraps only the
// global on/off (CUDA, float16), so the per-device type is set through these exported C++
// functions directly. Both enums are `int8_t`-backed: `c10::DeviceType` (CPU = 0, CUDA = 1)
// and `c10::ScalarType` (`tch::Kind`'s integer).
extern "C" {
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn at_set_autocast_enabled(device_type: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn at_is_autocast_enabled(device_type: i8) -> bool;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device_type: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device_type: i8) -> i8;
    #[link_name = "_ZN2at8autocast17increment_nestingEv"]
    fn at_autocast_increment_nesting() -> i64;
    #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
    fn at_autocast_decrement_nesting() -> i64;
    #[link_name = "_ZN2at8autocast11clear_cacheEv"]
    fn at_autocast_clear_cache();
}

/// An autocast scope on the current thread: ops on `device` run in `kind` where autocast
/// allows it, until the guard is dropped, which restores the previous state. Autocast state is
/// thread-local, so the guard is neither `Send` nor `Sync`.
pub struct Autocast {
    device_type: i8,
    was_enabled: bool,
    was_dtype: i8,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Autocast {
    pub fn enter(device: Device, kind: Kind) -> Self {
        let device_type = match device {
            Device::Cuda(_) => 1,
            _ => 0,
        };
        // SAFETY: plain setters/getters of thread-local flags in libtorch_cpu; the arguments
        // are valid enum values (see the extern block).
        let (was_enabled, was_dtype) = unsafe {
            let state = (
                at_is_autocast_enabled(device_type),
                at_get_autocast_dtype(device_type),
            );
            at_set_autocast_dtype(device_type, kind_code(kind));
            at_set_autocast_enabled(device_type, true);
            at_autocast_increment_nesting();
            state
        };
        Self {
            device_type,
            was_enabled,
            was_dtype,
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: as in `enter`. Leaving the outermost scope clears the cast-weight cache,
        // as `torch.autocast.__exit__` does.
        unsafe {
            if at_autocast_decrement_nesting() == 0 {
                at_autocast_clear_cache();
            }
            at_set_autocast_enabled(self.device_type, self.was_enabled);
            at_set_autocast_dtype(self.device_type, self.was_dtype);
        }
    }
}

fn kind_code(kind: Kind) -> i8 {
    match kind {
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::BFloat16 => 15,
        other => panic!("autocast to {other:?} is not a reduced float type"),
    }
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

    #[test]
    fn autocast_scope_runs_matmuls_in_bf16_and_restores_fp32() {
        let a = tch::Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let b = tch::Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
        {
            let _outer = Autocast::enter(Device::Cpu, Kind::BFloat16);
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            {
                let _inner = Autocast::enter(Device::Cpu, Kind::BFloat16);
                assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            }
            assert_eq!(
                a.matmul(&b).kind(),
                Kind::BFloat16,
                "inner scope ended the outer"
            );
        }
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
    }

    #[test]
    fn bf16_is_refused_off_cuda_and_fp32_is_a_no_op() {
        assert!(Precision::Fp32.enter(Device::Cpu).unwrap().is_none());
        let err = Precision::Bf16
            .enter(Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("bf16") && err.contains("cuda"), "{err}");
    }
}
