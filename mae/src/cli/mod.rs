//! The `mae` command, one file per subcommand: its flags (clap's derive; their doc comments are its
//! `--help`) and a `run` that calls the library. [`common`] holds the flags and helpers several
//! subcommands share.

pub mod attention;
pub mod bench;
pub mod common;
pub mod embed;
pub mod finetune;
pub mod geometry;
pub mod info;
pub mod probe;
pub mod reconstruct;
pub mod study;
pub mod train;
