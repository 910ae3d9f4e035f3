# Everyday recipes: thin wrappers over `cargo xtask`, which has the real `--help`.
# Names are passed as arguments, never pasted into the shell, so any branch name is safe.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

default:
    @just --list

# Open the git worktree ../<repo>-NAME on branch NAME (made from HEAD unless it exists), with its own database
worktree NAME *ARGS:
    cargo xtask db worktree "${@:2}" -- "$1"

# Re-clone this worktree's database from the golden template (asks first)
worktree-reset *ARGS:
    cargo xtask db worktree --reset "$@"

# Drop the database of the worktree of branch NAME and remove that worktree (asks first)
worktree-remove NAME *ARGS:
    cargo xtask db worktree --drop "${@:2}" -- "$1"

# Apply pending migrations to this worktree's database (DATABASE_URL)
migrate:
    cargo xtask db migrate

# Regenerate docs/schema.sql and docs/database.md (and the project's generators) from a fresh database
generate:
    cargo xtask db generate

# Compare two schemas (database names, postgres:// URLs or .sql files); exit 1 when they differ
schema-diff A B *ARGS:
    cargo xtask db schema-diff "${@:3}" -- "$1" "$2"

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
