//! What every stage shares: the run's seed, device and precision ([`Common`], set once at the top
//! of a run config), and the two command-line groups that set them ([`SeedArg`], [`RuntimeArgs`]),
//! defined here once and flattened into every subcommand that needs them.
use anyhow::Result;
use policy::device::{Autocast, DeviceArg, Precision};
use serde::Serialize;

use crate::error::usage;

/// Settings every stage shares: one seed reaches every RNG of every stage. Stages hash it with
/// their own config section.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Common {
    /// The one seed; every RNG derives from it with a named stream.
    pub seed: u64,
    /// The device of the stages that run a model.
    pub device: DeviceArg,
    /// Left out of the fingerprint when fp32, so runs made before the key existed keep theirs.
    #[serde(skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            seed: 0,
            device: DeviceArg::Cpu,
            precision: Precision::Fp32,
        }
    }
}

impl Common {
    /// The settings of a subcommand's `--seed`, `--device` and `--precision`.
    pub fn new(seed: &SeedArg, runtime: &RuntimeArgs) -> Self {
        Self {
            seed: seed.seed,
            device: runtime.device,
            precision: runtime.precision,
        }
    }

    /// A stage that runs no model: only the seed.
    pub fn seeded(seed: &SeedArg) -> Self {
        Self {
            seed: seed.seed,
            ..Self::default()
        }
    }

    /// The device a stage runs its models on, and the autocast scope its precision asks for:
    /// keep the guard alive while the model runs (`let (device, _amp) = common.device()?`).
    pub fn device(&self) -> Result<(tch::Device, Option<Autocast>)> {
        RuntimeArgs {
            device: self.device,
            precision: self.precision,
        }
        .device()
    }
}

/// A stage's subcommand, one shape for all: what it reads (`I`), its config as flags (`C`), the
/// flags of its own that are not config (`X`, e.g. `--lr`), the run settings (`R`: `--seed`,
/// `--device`, `--precision`) and where it writes. Its `--help` text is its variant's doc in
/// `cli.rs`.
#[derive(Debug, clap::Args)]
pub struct StageArgs<I, C, X = NoFlags, R = CommonArgs>
where
    I: clap::Args,
    C: clap::Args,
    X: clap::Args,
    R: clap::Args,
{
    #[command(flatten)]
    pub inputs: I,
    #[command(flatten)]
    pub config: C,
    #[command(flatten)]
    pub extra: X,
    #[command(flatten)]
    pub run: R,
    #[command(flatten)]
    pub out: super::OutArg,
}

/// The `X` or `R` of a [`StageArgs`] that has none.
#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
pub struct NoFlags {}

/// `--seed`, `--device` and `--precision`: the [`Common`] settings of a subcommand that runs a
/// model (`Common::from(&args.common)`).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl From<&CommonArgs> for Common {
    fn from(args: &CommonArgs) -> Self {
        Self::new(&args.seed, &args.runtime)
    }
}

/// `--seed`.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedArg {
    /// The seed of every generator (each RNG derives from it with a named stream).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `--device` and `--precision`.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// cpu, cuda or auto.
    #[arg(long, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// fp32, or bf16 (autocast on CUDA; weights and optimizer state stay fp32).
    #[arg(long, default_value_t = Precision::Fp32)]
    pub precision: Precision,
}

impl RuntimeArgs {
    /// The device, and the autocast scope of the precision (a usage error for bf16 off CUDA).
    pub fn device(&self) -> Result<(tch::Device, Option<Autocast>)> {
        let device = policy::device::resolve(self.device).map_err(|e| usage(e.to_string()))?;
        if device.is_cuda() && policy::dist::group().is_some() {
            // Gloo could move CUDA tensors, but the NCCL path a GPU job needs is not built, and
            // no GPU run of several ranks has been checked.
            return Err(usage(
                "--device cuda with several ranks: Ember's multi-process runs are CPU-only so far                  (c10d Gloo; NCCL is not built yet). Run one process per GPU job, or --device cpu",
            ));
        }
        let amp = self
            .precision
            .enter(device)
            .map_err(|e| usage(e.to_string()))?;
        Ok((device, amp))
    }
}

/// `--lr`: the peak learning rate of a training stage; its cosine schedule decays to a tenth of
/// it. Without the flag, the stage's default schedule.
#[derive(Debug, Clone, clap::Args)]
pub struct LrArg {
    /// Peak learning rate; the cosine schedule decays to a tenth of it (default: the stage's).
    #[arg(long)]
    pub lr: Option<f64>,
}

impl LrArg {
    /// Sets `optim`'s peak and final learning rates when the flag was given.
    pub fn apply(&self, optim: &mut policy::train::OptimConfig) {
        if let Some(lr) = self.lr {
            optim.lr = lr;
            optim.min_lr = lr / 10.0;
        }
    }
}
