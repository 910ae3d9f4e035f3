//! `db schema-diff --a A --b B`: do two schemas match? Exit 0 equal, 1 different, 2 error. The
//! comparison is [`super::ops::compare`]; this prints it.

use anyhow::Result;
use serde::Serialize;

use super::ops::compare::{compare, Compare};
use super::Ctx;
use crate::error::{fail, Verdict};
use crate::flags::{Format, SchemaDiff};
use crate::schema::{self, Options};
use crate::time;

#[derive(Serialize)]
struct JsonReport<'a> {
    equal: bool,
    a: String,
    b: String,
    #[serde(flatten)]
    difference: &'a schema::Difference,
    warnings: &'a [String],
}

pub fn run(ctx: &Ctx, flags: SchemaDiff) -> Result<()> {
    let started = std::time::Instant::now();
    let missing = || {
        fail(
            "schema-diff compares two sides, and was given fewer",
            "name both: `cargo xtask db schema-diff A B` (or --a A --b B), e.g. `fresh docs/schema.sql`",
        )
    };
    let what = Compare {
        a: flags.a.as_deref().or(flags.first.as_deref()).ok_or_else(missing)?,
        b: flags.b.as_deref().or(flags.second.as_deref()).ok_or_else(missing)?,
        schemas: &flags.schema,
        ignore: &flags.ignore,
        options: Options { with_privileges: flags.with_privileges, strict_column_order: flags.strict_column_order },
    };
    let o = compare(ctx, &what)?;
    let (difference, warnings, (fa, fb), (ra, rb)) = (&o.difference, &o.warnings, &o.files, &o.rendered);
    let equal = o.equal;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    match flags.format {
        Format::Json => {
            let report = JsonReport { equal, a: o.a.clone(), b: o.b.clone(), difference, warnings };
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Format::Text if !equal => {
            for line in o.lines() {
                println!("{line}");
            }
            println!();
            let color = crate::term::colour_on_stdout();
            print!(
                "{}",
                schema::unified_diff(
                    ra,
                    rb,
                    &fa.display().to_string(),
                    &fb.display().to_string(),
                    flags.max_lines,
                    color
                )
            );
        }
        Format::Text => {}
    }
    eprintln!("canonical forms: {} and {} ({})", fa.display(), fb.display(), time::elapsed(started.elapsed()));
    if equal {
        eprintln!("schemas are equal ({} statements)", o.statements);
        return Ok(());
    }
    Err(Verdict(o.summary()).into())
}
