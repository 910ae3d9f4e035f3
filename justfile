# Recipes for everyday work; each is a thin wrapper over `cargo xtask`, which has the real --help.

default:
    @just --list

# Start the embedded local PostgreSQL (created on first use) and point .env at it
db-up:
    cargo xtask db up

# Stop the embedded local PostgreSQL (its data is kept)
db-down:
    cargo xtask db down

# Show the server, the golden template and the per-branch databases
db-status:
    cargo xtask db status

# Apply pending migrations to DATABASE_URL
migrate:
    cargo xtask db migrate

# Build the golden template from the migrations and app/seed.sql
template-create *ARGS:
    cargo xtask db template create {{ARGS}}

# Run the whole test suite (what CI runs)
test *ARGS:
    cargo xtask test {{ARGS}}

# Run the app against DATABASE_URL
serve:
    cargo run -p app -- serve
