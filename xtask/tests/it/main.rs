//! Integration tests: the real `xtask` binary against the real PostgreSQL server that
//! `cargo xtask test` starts, in throwaway git repositories.

mod support;

mod attack;
mod build_cache;
mod cli;
mod drops;
mod env_file;
mod errors;
mod freshness;
mod hints;
mod justfile;
mod mask;
mod peer_corpus;
mod prod_clone;
mod rehearse;
mod replace;
mod schema;
mod schema_diff;
mod secrets;
mod template;
mod up;
mod worktree;
