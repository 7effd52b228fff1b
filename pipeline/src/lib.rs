//! Ember's pipeline: the `ember` command line, the stage contract (typed context in, manifest
//! out), run directories and the report. Library crates do the work; this crate wires them.
pub mod cli;
pub mod compare_report;
pub mod config;
pub mod demo;
pub mod dist;
pub mod error;
pub mod logging;
pub mod plot;
pub mod report;
pub mod runner;
pub mod stage;
pub mod stages;
pub mod status;
