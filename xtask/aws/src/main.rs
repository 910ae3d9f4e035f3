//! `xtask-aws`: the AWS verbs of `cargo xtask db` (run by the xtask with the same command line).
//! Nothing but this crate calls AWS.

mod clone_prod;
mod credentials;
mod dump;
mod rds;
mod tunnel;
mod wait;

use std::time::{Duration, SystemTime};

use anyhow::Result;
use clap::Parser;
use xtask::error::{fail, report};
use xtask::flags::{AwsArgs, Command, DbVerb, ListClones, Xtask};

fn main() {
    xtask::proc::install_signal_handlers();
    let flags = match Xtask::try_parse() {
        Ok(f) => f,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { xtask::error::EXIT_ERROR } else { 0 });
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(run(flags));
    if let Err(err) = result {
        let r = report(&err);
        eprintln!("{}", r.line);
        std::process::exit(r.code);
    }
}

async fn run(flags: Xtask) -> Result<()> {
    let Command::Db(db) = flags.command else { anyhow::bail!("xtask-aws runs only the AWS verbs of `cargo xtask db`") };
    let ctx = xtask::db::Ctx::load(&db.config.overrides())?;
    match db.verb {
        DbVerb::CloneProd(c) => clone_prod::run(&ctx, c).await,
        DbVerb::ListClones(l) => list_clones(&ctx, l).await,
        _ => anyhow::bail!("xtask-aws runs only the AWS verbs of `cargo xtask db`"),
    }
}

/// Settings of one run: flags first, then `[workspace.metadata.db.aws]`.
#[derive(Clone)]
pub struct Aws {
    pub sdk: aws_config::SdkConfig,
    pub rds: aws_sdk_rds::Client,
    pub region: String,
    pub source: Option<String>,
}

pub async fn connect(ctx: &xtask::db::Ctx, args: &AwsArgs) -> Result<Aws> {
    let conf = &ctx.config.aws;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = args.region.clone().or_else(|| conf.region.clone()) {
        loader = loader.region(aws_config::Region::new(r));
    }
    if let Some(p) = args.profile.clone().or_else(|| conf.profile.clone()) {
        loader = loader.profile_name(p);
    }
    let sdk = loader.load().await;
    let Some(region) = sdk.region().map(|r| r.to_string()) else {
        return Err(fail(
            "no AWS region is configured",
            "pass --region, set AWS_REGION, or set `region` in [workspace.metadata.db.aws]",
        ));
    };
    Ok(Aws {
        rds: aws_sdk_rds::Client::new(&sdk),
        sdk,
        region,
        source: args.source_instance.clone().or_else(|| conf.source_instance.clone()),
    })
}

async fn list_clones(ctx: &xtask::db::Ctx, flags: ListClones) -> Result<()> {
    let aws = connect(ctx, &flags.aws).await?;
    let clones = rds::list(&aws.rds, SystemTime::now()).await?;
    if flags.format.json(flags.json) {
        println!("{}", serde_json::to_string_pretty(&clones)?);
    } else if clones.is_empty() {
        println!("no throwaway instances (none carries {}={})", rds::CREATED_BY_KEY, rds::CREATED_BY_VALUE);
    } else {
        println!("{:<48} {:<14} {:>8}  {:<22} CLONE OF", "INSTANCE", "STATUS", "AGE", "EXPIRES");
        for c in &clones {
            let age =
                c.age_seconds.map(|s| format!("{}h{:02}m", s / 3600, s % 3600 / 60)).unwrap_or_else(|| "?".into());
            let flag = if c.overdue { "  OVERDUE" } else { "" };
            println!(
                "{:<48} {:<14} {:>8}  {:<22} {}{flag}",
                c.id,
                c.status,
                age,
                c.expires_at.as_deref().unwrap_or("?"),
                c.clone_of.as_deref().unwrap_or("?")
            );
        }
    }
    if !flags.prune {
        return Ok(());
    }
    if std::env::args().any(|a| a == "--delete-expired") {
        eprintln!("warning: --delete-expired is deprecated and will be removed: use --prune");
    }
    let expired: Vec<&rds::Throwaway> = clones.iter().filter(|c| c.overdue).collect();
    if expired.is_empty() {
        eprintln!("nothing is past its expiry");
        return Ok(());
    }
    let names: Vec<&str> = expired.iter().map(|c| c.id.as_str()).collect();
    if flags.dry_run {
        eprintln!("--dry-run: would delete {} expired instance(s): {}", names.len(), names.join(", "));
        return Ok(());
    }
    if !xtask::term::confirm(&format!("Delete {} expired instance(s): {}?", names.len(), names.join(", ")), flags.yes)?
    {
        eprintln!("nothing deleted");
        return Ok(());
    }
    let protected: Vec<&str> = aws.source.iter().map(String::as_str).collect();
    let mut failures = Vec::new();
    for id in names {
        match rds::delete(&aws.rds, id, &protected, &aws.region, Duration::from_secs(300)).await {
            Ok(outcome) => eprintln!("{id}: {outcome:?}"),
            Err(e) => {
                eprintln!("{id}: {}", report(&e).line);
                failures.push(id.to_string());
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(fail(
            format!("{} instance(s) were not deleted: {}", failures.len(), failures.join(", ")),
            "see the lines above",
        ))
    }
}

/// An AWS error as a person needs it: what we were doing, the service's code and message (not
/// "service error"), or the transport failure's full chain.
pub fn aws_error<E>(doing: &str, err: aws_sdk_rds::error::SdkError<E>) -> anyhow::Error
where
    E: aws_sdk_rds::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = match err.as_service_error() {
        Some(s) => format!("{}: {}", s.code().unwrap_or("error"), s.message().unwrap_or("(no message)")),
        None => format!("{}", aws_sdk_rds::error::DisplayErrorContext(&err)),
    };
    let fix = if detail.contains("credentials") || detail.contains("ExpiredToken") {
        "log in to AWS (`aws sso login --profile …`) or set AWS_PROFILE / credentials in the environment"
    } else {
        "check the region, the profile and your AWS permissions"
    };
    fail(format!("{doing}: {detail}"), fix)
}
