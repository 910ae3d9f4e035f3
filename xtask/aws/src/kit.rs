//! What every AWS verb shares: the SDK configuration of one run (region, profile and source
//! instance: flags first, then `[workspace.metadata.db.aws]`), and AWS errors as a person needs
//! them.

use anyhow::Result;
use xtask::error::fail;
use xtask::flags::AwsArgs;

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
