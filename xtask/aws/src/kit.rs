//! What every AWS verb shares: the SDK configuration of one run (region, profile: flags first,
//! then `[workspace.metadata.db.aws]`; the sources named), and AWS errors as a person needs them.

use anyhow::Result;
use xtask::error::fail;
use xtask::flags::AwsArgs;

/// Settings of one run: flags first, then `[workspace.metadata.db.aws]`.
#[derive(Clone)]
pub struct Aws {
    pub sdk: aws_config::SdkConfig,
    pub rds: aws_sdk_rds::Client,
    pub region: String,
    /// Every source named, by the flags and by the configuration, instance or cluster: never
    /// deleted (nor any instance of a cluster among them).
    pub sources: Vec<String>,
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
        sources: [&args.source_instance, &args.source_cluster, &conf.source_instance, &conf.source_cluster]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
    })
}

/// An AWS error as a person needs it, on one line: what we were doing, the service's code and
/// message (not "service error"), or the transport failure's chain; and the fix for the usual
/// causes (no credentials, an expired session, a missing permission).
pub fn aws_error<E>(doing: &str, err: aws_sdk_rds::error::SdkError<E>) -> anyhow::Error
where
    E: aws_sdk_rds::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (code, detail) = match err.as_service_error() {
        Some(s) => (
            s.code().unwrap_or("error").to_string(),
            format!("{}: {}", s.code().unwrap_or("error"), s.message().unwrap_or("(no message)")),
        ),
        None => (String::new(), chain(&err)),
    };
    let profile = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "NAME".into());
    let login = format!("run `aws sso login --profile {profile}` (or `aws configure`), or set AWS_PROFILE");
    if detail.contains("no credentials found") || detail.contains("credential provider was not enabled") {
        return fail(format!("no AWS credentials ({doing})"), login);
    }
    let fix = if ["ExpiredToken", "ExpiredTokenException", "RequestExpired"].contains(&code.as_str())
        || detail.contains("expired")
    {
        format!("your AWS session has expired: {login}")
    } else if ["InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch"].contains(&code.as_str())
    {
        format!("AWS does not accept these credentials: {login}")
    } else if code.contains("AccessDenied") || code == "UnauthorizedOperation" || detail.contains("not authorized") {
        "your AWS identity lacks this permission: the IAM policy in docs/runbooks/prod-clone-refactor-testing.md lists every action".into()
    } else {
        "check the region, the profile and your AWS permissions".into()
    };
    fail(format!("{doing}: {detail}"), fix)
}

/// An error's `Display` and its sources', on one line (without repeats).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string().lines().next().unwrap_or("").trim().to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}
