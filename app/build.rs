//! Rebuild the app whenever a migration file changes: `sqlx::migrate!` embeds
//! the SQL at compile time, and without this hint cargo would not notice edits
//! to (or new files in) `../migrations`.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
