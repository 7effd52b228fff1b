//! Preference data for Ember: ingestion of human preference datasets (HH-RLHF, LLMBar,
//! PandaLM, UltraFeedback, SHP, Chatbot Arena, any pairwise table) into clean Parquet splits
//! with a quarantine of every dropped row, the built-in synthetic task with a gold reward
//! ([`synth`]), and the small statistics of the search and fine-tuning logs ([`stats`]).
//! Polars calls live in [`table`] only.
pub mod adapters;
pub mod error;
pub mod ingest;
pub mod read;
pub mod split;
pub mod stats;
pub mod synth;
pub mod table;

pub use adapters::{ColumnMap, Format, Reason};
pub use error::DatasetError;
pub use ingest::{ingest, IngestOptions, IngestStats};
pub use table::{read_pairs, read_prompts, read_sft, PairRow};
