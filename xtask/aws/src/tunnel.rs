//! Reaching the throwaway instance: `ssm` (Session Manager port forwarding through the bastion,
//! with the session-manager-plugin), `direct`, or `command` (a forwarder of the user's).
//!
//! The forwarders run in process groups of their own, so a Ctrl-C in the terminal does not reach
//! them before we are ready: we close them, in order, before the instance is deleted. The plugin
//! is closed with SIGINT (it then ends the session; SIGTERM would orphan it) and the session is
//! also terminated through the API. Both forwarders are written as xshell's `cmd!` (the user's
//! `--tunnel-command` is a shell line: `sh -c LINE`) and started here, not registered with
//! `proc`, whose signal thread would interrupt them before we are ready.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aws_sdk_ssm::config::ProvideCredentials;
use std::os::unix::process::CommandExt;
use xtask::error::fail;
use xtask::proc;

use crate::kit::aws_error;
use crate::rds::Endpoint;
use crate::wait::pause;

pub use xtask::db::clone_prod::PLUGIN;
pub const DOCUMENT: &str = "AWS-StartPortForwardingSessionToRemoteHost";
/// The environment variable the plugin reads the StartSession response from (plugin ≥ 1.2.497:
/// its name is passed in argv instead of the response, so the token stays out of `ps`).
pub const RESPONSE_ENV: &str = "AWS_SSM_START_SESSION_RESPONSE";
/// The running EC2 instance named `name` (its `Name` tag): the bastion.
pub async fn find_bastion(sdk: &aws_config::SdkConfig, name: &str) -> Result<String> {
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let filter = |k: &str, v: &str| aws_sdk_ec2::types::Filter::builder().name(k).values(v).build();
    let mut ids = Vec::new();
    let mut pages = ec2
        .describe_instances()
        .filters(filter("tag:Name", name))
        .filters(filter("instance-state-name", "running"))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error(&format!("looking for the bastion `{name}`"), e))?;
        for r in page.reservations() {
            ids.extend(r.instances().iter().filter_map(|i| i.instance_id()).map(str::to_string));
        }
    }
    ids.sort();
    match ids.len() {
        0 => Err(fail(
            format!("no running EC2 instance is named `{name}` (the bastion the ssm tunnel goes through)"),
            "start it, or name the right one with --bastion (`bastion` in [workspace.metadata.db.aws])",
        )),
        1 => Ok(ids.remove(0)),
        n => {
            eprintln!("warning: {n} running instances are named `{name}`; using {}", ids[0]);
            Ok(ids.remove(0))
        }
    }
}

/// How to open the tunnel.
pub enum Plan {
    Direct,
    Command { template: String },
    Ssm { plugin: PathBuf, bastion: String, sdk: Box<aws_config::SdkConfig>, region: String },
}

/// `{local_port}`, `{host}`, `{port}` filled in. The host comes from AWS; it is checked to be a
/// plain DNS name before it goes into a shell command.
pub fn fill(template: &str, local_port: u16, endpoint: &Endpoint) -> Result<String> {
    if endpoint.host.is_empty() || !endpoint.host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
        anyhow::bail!("the instance's endpoint `{}` is not a plain host name", endpoint.host);
    }
    Ok(template
        .replace("{local_port}", &local_port.to_string())
        .replace("{host}", &endpoint.host)
        .replace("{port}", &endpoint.port.to_string()))
}

/// The session the plugin runs, for the cleanup that must end it.
pub type SessionSlot = Arc<Mutex<Option<String>>>;

/// An open tunnel; closed by [`Tunnel::close`], or (less politely) when dropped.
pub struct Tunnel {
    /// Where clients connect.
    pub host: String,
    pub port: u16,
    child: Option<Child>,
    /// SIGINT for the plugin (it ends its session), SIGTERM for a user's command.
    stop_signal: i32,
    output: Arc<Mutex<VecDeque<String>>>,
}

impl Tunnel {
    pub async fn open(plan: &Plan, endpoint: &Endpoint, timeout: Duration, session: &SessionSlot) -> Result<Tunnel> {
        let local_port = xtask::pg::cluster::free_port()?;
        match plan {
            Plan::Direct => Ok(Tunnel {
                host: endpoint.host.clone(),
                port: endpoint.port,
                child: None,
                stop_signal: 0,
                output: Default::default(),
            }),
            Plan::Command { template } => {
                let line = fill(template, local_port, endpoint)?;
                eprintln!("  tunnel: sh -c {line:?}");
                // The user's own command line (`--tunnel-command`): a shell line, so a shell runs it.
                let sh = xshell::Shell::new().context("reading the current directory")?;
                let cmd: Command = xshell::cmd!(sh, "sh -c {line}").into();
                let mut t = Tunnel::spawn(cmd, local_port, libc::SIGTERM)?;
                t.ready(timeout, None, "the tunnel command").await?;
                Ok(t)
            }
            Plan::Ssm { plugin, bastion, sdk, region } => {
                let ssm = aws_sdk_ssm::Client::new(sdk);
                let host_param = vec![endpoint.host.clone()];
                let started = ssm
                    .start_session()
                    .target(bastion)
                    .document_name(DOCUMENT)
                    .parameters("host", host_param.clone())
                    .parameters("portNumber", vec![endpoint.port.to_string()])
                    .parameters("localPortNumber", vec![local_port.to_string()])
                    .reason("xtask-db clone-prod: pg_dump of a throwaway restore")
                    .send()
                    .await
                    .map_err(|e| aws_error(&format!("starting an SSM session on the bastion {bastion}"), e))?;
                let session_id = started.session_id().unwrap_or_default().to_string();
                *session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session_id.clone());
                eprintln!("  tunnel: SSM session {session_id} through {bastion}, local port {local_port}");
                let response = serde_json::json!({
                    "SessionId": session_id,
                    "TokenValue": started.token_value().unwrap_or_default(),
                    "StreamUrl": started.stream_url().unwrap_or_default(),
                });
                let request = serde_json::json!({
                    "Target": bastion,
                    "DocumentName": DOCUMENT,
                    "Parameters": {
                        "host": host_param,
                        "portNumber": [endpoint.port.to_string()],
                        "localPortNumber": [local_port.to_string()],
                    },
                });
                // The plugin calls the SSM API itself (to resume or end the session): it gets the
                // credentials we resolved (whatever their source: SSO, a role, a process) in its
                // environment, and therefore an empty profile.
                let creds = match sdk.credentials_provider() {
                    Some(p) => Some(p.provide_credentials().await.context("resolving AWS credentials for the plugin")?),
                    None => None,
                };
                // The plugin's argv, as the AWS CLI passes it: the response's variable, not the
                // response (its token stays out of `ps`), an empty profile.
                let (request, endpoint) = (request.to_string(), ssm_endpoint(sdk, region));
                let sh = xshell::Shell::new().context("reading the current directory")?;
                let mut cmd: Command =
                    xshell::cmd!(sh, "{plugin} {RESPONSE_ENV} {region} StartSession '' {request} {endpoint}")
                        .env(RESPONSE_ENV, response.to_string())
                        .env("AWS_REGION", region)
                        .into();
                if let Some(c) = creds {
                    cmd.env("AWS_ACCESS_KEY_ID", c.access_key_id()).env("AWS_SECRET_ACCESS_KEY", c.secret_access_key());
                    match c.session_token() {
                        Some(t) => cmd.env("AWS_SESSION_TOKEN", t),
                        None => cmd.env_remove("AWS_SESSION_TOKEN"),
                    };
                    cmd.env_remove("AWS_PROFILE");
                }
                let mut t = Tunnel::spawn(cmd, local_port, libc::SIGINT)?;
                t.ready(timeout, Some(local_port), PLUGIN).await?;
                Ok(t)
            }
        }
    }

    fn spawn(mut cmd: Command, local_port: u16, stop_signal: i32) -> Result<Tunnel> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().with_context(|| format!("starting {}", cmd.get_program().to_string_lossy()))?;
        let output: Arc<Mutex<VecDeque<String>>> = Default::default();
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = output.lock().unwrap_or_else(|e| e.into_inner());
                    o.push_back(line);
                    if o.len() > 20 {
                        o.pop_front();
                    }
                }
            });
        }
        Ok(Tunnel { host: "127.0.0.1".into(), port: local_port, child: Some(child), stop_signal, output })
    }

    fn tail(&self) -> String {
        let o = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let lines: Vec<&str> = o.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
        if lines.is_empty() {
            "no output".into()
        } else {
            lines[lines.len().saturating_sub(3)..].join(" / ")
        }
    }

    /// Ready when the port accepts connections, or the plugin says `Port N opened`.
    async fn ready(&mut self, timeout: Duration, announced: Option<u16>, what: &str) -> Result<()> {
        let start = Instant::now();
        let opened = announced.map(|p| format!("Port {p} opened"));
        loop {
            proc::check_interrupt()?;
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                // Give the reader threads a moment to collect the last words.
                std::thread::sleep(Duration::from_millis(100));
                return Err(fail(
                    format!("{what} exited ({}) before the tunnel was up: {}", proc::describe(status), self.tail()),
                    "run it by hand to see why, and check the bastion and your AWS session",
                ));
            }
            let said = opened.as_ref().is_some_and(|o| {
                self.output.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|l| l.contains(o.as_str()))
            });
            if said
                || std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_millis(200))
                    .is_ok()
            {
                eprintln!("  tunnel up on 127.0.0.1:{} after {}", self.port, xtask::time::elapsed(start.elapsed()));
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(fail(
                    format!("the tunnel did not accept connections on 127.0.0.1:{} within {}s ({what}: {})", self.port, timeout.as_secs(), self.tail()),
                    "check the tunnel (bastion running, SSM agent online, your forwarder's arguments), or raise --tunnel-timeout",
                ));
            }
            pause(Duration::from_millis(200)).await?;
        }
    }

    /// Stops the forwarder: its signal, then SIGKILL after 5 s. For the plugin, the session is
    /// also ended through the API by the caller ([`terminate`]).
    pub fn close(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pgid = child.id() as libc::pid_t;
        // SAFETY: signalling the process group we created for this child.
        unsafe { libc::kill(-pgid, self.stop_signal) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if matches!(child.try_wait(), Ok(Some(_))) {
                // Its own children (behind `sh -c`) too.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.close();
    }
}

/// Ends an SSM session through the API (the plugin may have been killed before it could).
pub async fn terminate(sdk: &aws_config::SdkConfig, session_id: &str) {
    let ssm = aws_sdk_ssm::Client::new(sdk);
    if let Err(e) = ssm.terminate_session().session_id(session_id).send().await {
        eprintln!(
            "warning: {}",
            xtask::error::report(&aws_error(&format!("ending the SSM session {session_id}"), e)).line
        );
    }
}

/// The SSM endpoint the plugin talks to: the configured one (AWS_ENDPOINT_URL_SSM,
/// AWS_ENDPOINT_URL, the profile's), else the region's.
fn ssm_endpoint(sdk: &aws_config::SdkConfig, region: &str) -> String {
    if let Some(url) = std::env::var("AWS_ENDPOINT_URL_SSM").ok().filter(|u| !u.is_empty()) {
        return url;
    }
    if let Some(url) = sdk.endpoint_url() {
        return url.to_string();
    }
    let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    format!("https://ssm.{region}.{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_hostile_hosts() {
        let e = Endpoint { host: "prod-clone-1.abc.us-east-1.rds.amazonaws.com".into(), port: 5432 };
        assert_eq!(
            fill("ssh -N -L {local_port}:{host}:{port} bastion", 15432, &e).unwrap(),
            "ssh -N -L 15432:prod-clone-1.abc.us-east-1.rds.amazonaws.com:5432 bastion"
        );
        for host in ["x; rm -rf /", "$(id)", "a b", ""] {
            assert!(fill("{host}", 1, &Endpoint { host: host.into(), port: 1 }).is_err(), "{host}");
        }
    }
}
