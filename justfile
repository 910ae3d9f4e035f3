# Everyday recipes: thin wrappers over `cargo xtask`, which has the real `--help`.
# Names are passed as arguments, never pasted into the shell, so any branch name is safe.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

default:
    @just --list

# Create the git worktree ../<repo>-NAME on a new branch NAME and give it its own database
worktree NAME:
    dir="../$(basename "$PWD")-${1//\//-}"; git worktree add -b "$1" "$dir" && cd "$dir" && cargo xtask db worktree

# Drop the database of worktree NAME (created by `just worktree NAME`) and remove the worktree
worktree-remove NAME:
    dir="../$(basename "$PWD")-${1//\//-}"; (cd "$dir" && cargo xtask db worktree --drop -y) && git worktree remove "$dir"

# Apply pending migrations to this worktree's database (DATABASE_URL)
migrate:
    cargo xtask db migrate

# Regenerate docs/schema.sql and docs/database.md (and the project's generators) from a fresh database
generate:
    cargo xtask db generate

# Compare two schemas (database names, postgres:// URLs or .sql files); exit 1 when they differ
schema-diff A B *ARGS:
    cargo xtask db schema-diff --a "$1" --b "$2" "${@:3}"

# Show the server, the golden template and the per-branch databases
db-status:
    cargo xtask db status

# Start the embedded local PostgreSQL (created on first use) and point .env at it
db-up:
    cargo xtask db up

# Stop the embedded local PostgreSQL (its data is kept)
db-down:
    cargo xtask db down

# Build the golden template from the migrations and app/seed.sql
template-create *ARGS:
    cargo xtask db template create "$@"

# Run the whole test suite (what CI runs)
test *ARGS:
    cargo xtask test "$@"

# Run the app against this worktree's database
serve:
    cargo run -p app -- serve
