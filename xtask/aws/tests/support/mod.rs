//! What the AWS tests run against: moto server (a local AWS API emulator on 127.0.0.1) behind a
//! recording, fault-injecting proxy; the test PostgreSQL server standing in for the restored
//! RDS instance (TLS on); a project directory of its own per test. Never contacts AWS: every
//! endpoint is local, instance metadata is off, no profile files are read.

#![allow(dead_code)]

pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_rds::types::Tag;

#[allow(unused_imports)]
pub use proxy::{Effect, Proxy, TOKEN};

pub const OURS: (&str, &str) = ("CreatedBy", "xtask-db clone-prod");
pub const SOURCE: &str = "prod-db";
pub const REGION: &str = "us-east-1";
pub const PARAMETER: &str = "/prod/db/credentials";
pub const SECRET: &str = "prod/db/credentials";

/// The app's binary (built by `cargo xtask test`).
pub fn app_bin() -> PathBuf {
    PathBuf::from(std::env::var_os("XTASK_TEST_APP_BIN").expect("run through `cargo xtask test` (it builds the app)"))
}

pub fn venv_bin() -> PathBuf {
    PathBuf::from(std::env::var_os("XTASK_TEST_VENV_BIN").expect("run through `cargo xtask test` (it installs moto)"))
}

pub struct Moto {
    child: Child,
    pub port: u16,
    pub url: String,
    pub proxy: Proxy,
    dir: PathBuf,
}

impl Moto {
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(venv_bin().join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(60), "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let dir = std::env::temp_dir().join(format!("xtask-aws-it-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let proxy = Proxy::start(port);
        Moto { child, port, url: format!("http://127.0.0.1:{port}"), proxy, dir }
    }

    /// The environment of the tool under test: every call goes through the proxy.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.proxy.url.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", self.dir.join("config").display().to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", self.dir.join("credentials").display().to_string()),
        ]
    }

    fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_sdk_rds::config::SharedCredentialsProvider::new(
                aws_sdk_rds::config::Credentials::new("testing", "testing", None, None, "test"),
            ))
            .build()
    }

    /// Clients that talk to moto directly (to set the scene and to inspect it).
    pub fn rds(&self) -> aws_sdk_rds::Client {
        aws_sdk_rds::Client::new(&self.sdk())
    }
    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk())
    }
    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk())
    }
    pub fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

pub async fn instance(rds: &aws_sdk_rds::Client, id: &str, tags: Vec<Tag>) {
    rds.create_db_instance()
        .db_instance_identifier(id)
        .db_instance_class("db.t4g.small")
        .engine("postgres")
        .allocated_storage(20)
        .master_username("app")
        .master_user_password("not-a-real-password")
        .set_tags(Some(tags))
        .send()
        .await
        .unwrap();
}

/// Identifiers of every instance moto has.
pub async fn ids(rds: &aws_sdk_rds::Client) -> Vec<String> {
    let out = rds.describe_db_instances().send().await.unwrap();
    let mut v: Vec<String> =
        out.db_instances().iter().filter_map(|d| d.db_instance_identifier().map(str::to_string)).collect();
    v.sort();
    v
}

/// Identifiers of every snapshot moto has.
pub async fn snapshot_ids(rds: &aws_sdk_rds::Client) -> Vec<String> {
    let out = rds.describe_db_snapshots().send().await.unwrap();
    let mut v: Vec<String> =
        out.db_snapshots().iter().filter_map(|d| d.db_snapshot_identifier().map(str::to_string)).collect();
    v.sort();
    v
}

/// A production account in moto: a VPC with two subnets and a security group, a subnet group,
/// the source instance in them (PostgreSQL 15; moto takes an automated snapshot of it), the
/// bastion, and the database credentials in SSM and in Secrets Manager.
pub async fn production(moto: &Moto, db: &StandIn) {
    let ec2 = moto.ec2();
    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mut subnets = Vec::new();
    for (cidr, az) in [("10.0.1.0/24", "us-east-1a"), ("10.0.2.0/24", "us-east-1b")] {
        let s = ec2.create_subnet().vpc_id(&vpc_id).cidr_block(cidr).availability_zone(az).send().await.unwrap();
        subnets.push(s.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    let sg =
        ec2.create_security_group().group_name("prod-db").description("prod db").vpc_id(&vpc_id).send().await.unwrap();
    let sg_id = sg.group_id().unwrap().to_string();
    let rds = moto.rds();
    rds.create_db_subnet_group()
        .db_subnet_group_name("prod-private")
        .db_subnet_group_description("private subnets")
        .set_subnet_ids(Some(subnets))
        .send()
        .await
        .unwrap();
    rds.create_db_instance()
        .db_instance_identifier(SOURCE)
        .db_instance_class("db.r6g.large")
        .engine("postgres")
        .engine_version("15.4")
        .allocated_storage(100)
        .master_username(&db.role)
        .master_user_password("not-the-dump-password")
        .db_name(&db.dbname)
        .db_subnet_group_name("prod-private")
        .vpc_security_group_ids(&sg_id)
        .deletion_protection(true)
        .send()
        .await
        .unwrap();
    ec2.run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .tags(aws_sdk_ec2::types::Tag::builder().key("Name").value("bastion").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let creds = serde_json::json!({"username": db.role, "password": db.password, "dbname": db.dbname}).to_string();
    moto.ssm()
        .put_parameter()
        .name(PARAMETER)
        .value(&creds)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    moto.secrets().create_secret().name(SECRET).secret_string(&creds).send().await.unwrap();
}

/// The production database's stand-in on the test server: a role with a password (what the
/// credentials parameter holds) owning a database with data in two schemas.
pub struct StandIn {
    pub role: String,
    pub password: String,
    pub dbname: String,
    pub port: u16,
    admin: String,
}

pub fn test_url() -> String {
    std::env::var("XTASK_TEST_DATABASE_URL").expect("run through `cargo xtask test` (it starts the test server)")
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{tag}_{}_{:x}", std::process::id(), nanos)
}

pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new(xtask::pg::tools::find("psql").unwrap())
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "psql failed: {}\n{sql}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

/// The stand-in's schema (what production's first migration made).
pub const SCHEMA: &str = "CREATE SCHEMA crm;
CREATE TABLE crm.customer (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, email text UNIQUE);
CREATE TABLE crm.orders (id serial PRIMARY KEY, customer_id bigint REFERENCES crm.customer ON DELETE CASCADE, total numeric(10,2), placed timestamptz DEFAULT now());
CREATE TABLE public.events (id bigserial PRIMARY KEY, payload jsonb);
";

/// The stand-in's rows.
pub const DATA: &str = "INSERT INTO crm.customer (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 500) g;
INSERT INTO crm.orders (customer_id, total) SELECT 1 + g % 500, g * 1.5 FROM generate_series(1, 3000) g;
INSERT INTO public.events (payload) SELECT jsonb_build_object('n', g) FROM generate_series(1, 1200) g;";

impl StandIn {
    pub fn create(tag: &str) -> StandIn {
        let s = StandIn::bare(tag);
        s.as_owner(&format!("{SCHEMA}{DATA}"));
        s
    }

    /// A role owning an empty database.
    pub fn bare(tag: &str) -> StandIn {
        let admin = test_url();
        let name = unique(tag);
        let password = format!("pw-{name}-Secr3t");
        psql(&admin, &format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'"));
        psql(&admin, &format!("CREATE DATABASE {name} OWNER {name}"));
        let port: u16 = admin.rsplit_once(':').unwrap().1.split('/').next().unwrap().parse().unwrap();
        StandIn { role: name.clone(), password, dbname: name.clone(), port, admin }
    }

    /// The URL the role logs in with.
    pub fn owner_url(&self) -> String {
        let (_, after) = self.admin.split_once('@').unwrap();
        let host_port = after.split('/').next().unwrap();
        format!("postgres://{}:{}@{host_port}/{}", self.role, self.password, self.dbname)
    }

    /// The superuser's URL of this database.
    pub fn admin_url(&self) -> String {
        with_db(&self.admin, &self.dbname)
    }

    pub fn as_owner(&self, sql: &str) {
        psql(&self.admin_url(), &format!("SET ROLE {}; {sql}", self.role));
    }

    /// `schema.table` → row count, for every table of the database at `url`.
    pub fn counts(url: &str) -> Vec<(String, i64)> {
        let list = psql(url, "SELECT schemaname || '.' || relname FROM pg_stat_user_tables ORDER BY 1");
        list.lines()
            .map(|t| (t.to_string(), psql(url, &format!("SELECT count(*) FROM {t}")).parse().unwrap()))
            .collect()
    }

    pub fn server_url(&self, db: &str) -> String {
        with_db(&self.admin, db)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = Command::new(xtask::pg::tools::find("psql").unwrap())
            .args(["-X", "-q", "-d", &self.admin, "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.dbname))
            .output();
        let _ = Command::new(xtask::pg::tools::find("psql").unwrap())
            .args(["-X", "-q", "-d", &self.admin, "-c"])
            .arg(format!("DROP ROLE IF EXISTS {}", self.role))
            .output();
    }
}

/// A repository of its own with the tool's configuration (and `/dump/` git-ignored unless not).
pub struct Project {
    pub dir: PathBuf,
    pub prefix: String,
}

impl Project {
    pub fn new(tag: &str, ignore_dump: bool) -> Project {
        Project::configured(tag, ignore_dump, &format!("credentials_parameter = \"{PARAMETER}\"\n"))
    }

    /// A project whose `[workspace.metadata.db.aws]` ends with `extra` (after the source and
    /// the bastion).
    pub fn configured(tag: &str, ignore_dump: bool, extra: &str) -> Project {
        let prefix = format!("{}_", unique(tag));
        let dir = std::env::temp_dir().join(format!("xtask-aws-project-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[workspace]\n\n[workspace.metadata.db]\nprefix = \"{prefix}\"\n\n[workspace.metadata.db.aws]\n\
                 source_instance = \"{SOURCE}\"\nbastion = \"bastion\"\n{extra}"
            ),
        )
        .unwrap();
        std::fs::write(dir.join(".gitignore"), if ignore_dump { "/dump/\n/.env\n" } else { "/.env\n" }).unwrap();
        let git = Command::new("git").args(["init", "-q"]).current_dir(&dir).status().unwrap();
        assert!(git.success());
        Project { dir, prefix }
    }

    pub fn dump_dir(&self) -> PathBuf {
        self.dir.join("dump")
    }

    /// The files in dump/ (the directory may not exist).
    pub fn dumps(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dump_dir())
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a run printed.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// `xtask-aws db <args>` in `dir` with moto's environment plus `env`, not started yet.
pub fn command(moto: &Moto, dir: &Path, args: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask-aws"));
    cmd.arg("db").args(args).current_dir(dir).stdin(Stdio::null());
    for var in ["AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "DATABASE_URL", "AWS_ENDPOINT_URL_SSM"] {
        cmd.env_remove(var);
    }
    cmd.envs(moto.env());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Checks what every run must hold: no database password and no session token in its output.
pub fn finish(out: Output, secrets: &[&str]) -> Run {
    let run = Run {
        code: out
            .status
            .code()
            .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&out.status).unwrap_or(0)),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for s in secrets.iter().chain([&TOKEN]) {
        assert!(!run.all().contains(s), "a secret appeared in the output:\n{}", run.all());
    }
    run
}

/// The stand-in forwarder as a `--tunnel-command` (to the test server, whatever the host).
pub fn forwarder(db: &StandIn, log: &Path) -> String {
    format!(
        "{} {} forward --listen {{local_port}} --to 127.0.0.1:{} --expect-host {{host}} --log {}",
        venv_bin().join("python3").display(),
        standin_script().display(),
        db.port,
        log.display()
    )
}

pub fn standin_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/standin.py")
}

/// The forwarder's log: one JSON object per line.
pub fn log_records(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Instances carrying our tag.
pub async fn tagged(rds: &aws_sdk_rds::Client) -> Vec<String> {
    let out = rds.describe_db_instances().send().await.unwrap();
    out.db_instances()
        .iter()
        .filter(|d| d.tag_list().iter().any(|t| t.key() == Some(OURS.0) && t.value() == Some(OURS.1)))
        .filter_map(|d| d.db_instance_identifier().map(str::to_string))
        .collect()
}

/// The Aurora production: a cluster (Aurora PostgreSQL 15, deletion protection on) whose master
/// user and database are the stand-in's, in its own VPC, subnet group and security group, with
/// one instance in it.
pub const AURORA: &str = "prod-aurora";
pub const AURORA_INSTANCE: &str = "prod-aurora-1";

pub async fn aurora_production(moto: &Moto, user: &str, dbname: &str) {
    let ec2 = moto.ec2();
    let vpc = ec2.create_vpc().cidr_block("10.1.0.0/16").send().await.unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mut subnets = Vec::new();
    for (cidr, az) in [("10.1.1.0/24", "us-east-1a"), ("10.1.2.0/24", "us-east-1b")] {
        let s = ec2.create_subnet().vpc_id(&vpc_id).cidr_block(cidr).availability_zone(az).send().await.unwrap();
        subnets.push(s.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    let sg = ec2
        .create_security_group()
        .group_name("prod-aurora")
        .description("prod aurora")
        .vpc_id(&vpc_id)
        .send()
        .await
        .unwrap();
    let sg_id = sg.group_id().unwrap().to_string();
    let rds = moto.rds();
    rds.create_db_subnet_group()
        .db_subnet_group_name("aurora-private")
        .db_subnet_group_description("private subnets")
        .set_subnet_ids(Some(subnets))
        .send()
        .await
        .unwrap();
    rds.create_db_cluster()
        .db_cluster_identifier(AURORA)
        .engine("aurora-postgresql")
        .engine_version("15.4")
        .master_username(user)
        .master_user_password("not-the-dump-password")
        .database_name(dbname)
        .db_subnet_group_name("aurora-private")
        .vpc_security_group_ids(&sg_id)
        .deletion_protection(true)
        .send()
        .await
        .unwrap();
    rds.create_db_instance()
        .db_instance_identifier(AURORA_INSTANCE)
        .db_cluster_identifier(AURORA)
        .engine("aurora-postgresql")
        .db_instance_class("db.r6g.large")
        .send()
        .await
        .unwrap();
}

/// Identifiers of every cluster moto has.
pub async fn cluster_ids(rds: &aws_sdk_rds::Client) -> Vec<String> {
    let out = rds.describe_db_clusters().send().await.unwrap();
    let mut v: Vec<String> =
        out.db_clusters().iter().filter_map(|c| c.db_cluster_identifier().map(str::to_string)).collect();
    v.sort();
    v
}

/// Clusters carrying our tag.
pub async fn tagged_clusters(rds: &aws_sdk_rds::Client) -> Vec<String> {
    let out = rds.describe_db_clusters().send().await.unwrap();
    out.db_clusters()
        .iter()
        .filter(|c| c.tag_list().iter().any(|t| t.key() == Some(OURS.0) && t.value() == Some(OURS.1)))
        .filter_map(|c| c.db_cluster_identifier().map(str::to_string))
        .collect()
}
