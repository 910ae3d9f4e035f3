//! An HTTP proxy in front of moto, on 127.0.0.1: it records every AWS call, answers what moto
//! does not implement (`AmazonSSM.StartSession` / `TerminateSession`), and injects faults
//! (an error instead of the call, or a rewritten answer) so the failure paths run for real.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The session token the StartSession stand-in hands out: it must never appear in any output.
pub const TOKEN: &str = "tok-3f9c1e7a-NEVER-PRINT-ME";

const JSON: &str = "application/x-amz-json-1.1";

#[derive(Debug, Clone)]
pub struct Call {
    /// `CreateDBSnapshot`, `StartSession`, …
    pub action: String,
    pub body: String,
}

#[derive(Debug, Clone)]
pub enum Effect {
    /// Answer with this AWS error instead of calling moto.
    Fail { code: String, message: String },
    /// Call moto (it does the work), then answer with this server error instead of its answer:
    /// the answer lost on the way back.
    LostAnswer { code: String },
    /// Call moto, then replace `from` by `to` in its answer.
    Rewrite { from: String, to: String },
    /// Call moto, then set the content of every `<tag>` element in its answer.
    SetElements(Vec<(String, String)>),
}

#[derive(Debug, Clone)]
struct Rule {
    action: String,
    body_contains: String,
    effect: Effect,
    /// How many more calls it applies to (`None`: all).
    times: Option<u32>,
    /// It applies only once a call of this action has been seen.
    after: Option<String>,
}

/// Runs on a call before it is forwarded (e.g. to do what AWS would do to the stand-in server).
pub type Hook = Box<dyn Fn(&str) + Send>;

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    calls: Vec<Call>,
    sessions: u32,
    hooks: Vec<(String, Hook)>,
}

pub struct Proxy {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let state: Arc<Mutex<State>> = Default::default();
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream_port, &s);
                });
            }
        });
        Proxy { url, state }
    }

    /// From now on, calls of `action` whose body contains `body_contains` get `effect`.
    pub fn rule(&self, action: &str, body_contains: &str, effect: Effect) {
        self.push(action, body_contains, effect, None);
    }

    /// Like [`Proxy::rule`], for the next `times` matching calls only.
    pub fn rule_times(&self, action: &str, body_contains: &str, effect: Effect, times: u32) {
        self.push(action, body_contains, effect, Some(times));
    }

    /// Like [`Proxy::rule`], once a call of `after` has been seen (e.g. the answers to the same
    /// Describe call, after a Modify).
    pub fn rule_after(&self, action: &str, body_contains: &str, effect: Effect, after: &str) {
        let rule = Rule {
            action: action.into(),
            body_contains: body_contains.into(),
            effect,
            times: None,
            after: Some(after.into()),
        };
        self.state.lock().unwrap().rules.push(rule);
    }

    fn push(&self, action: &str, body_contains: &str, effect: Effect, times: Option<u32>) {
        let rule = Rule { action: action.into(), body_contains: body_contains.into(), effect, times, after: None };
        self.state.lock().unwrap().rules.push(rule);
    }

    /// From now on, `hook` runs with the body of every call of `action`, before moto sees it.
    pub fn hook(&self, action: &str, hook: impl Fn(&str) + Send + 'static) {
        self.state.lock().unwrap().hooks.push((action.into(), Box::new(hook)));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn actions(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.action).collect()
    }
}

fn handle(mut client: TcpStream, upstream_port: u16, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    assert!(header("transfer-encoding").is_none(), "the proxy handles Content-Length bodies only");
    let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let json = header("x-amz-target").is_some();
    let action = match header("x-amz-target") {
        Some(t) => t.rsplit('.').next().unwrap_or("").to_string(),
        None => body.split('&').find_map(|p| p.strip_prefix("Action=")).unwrap_or("").to_string(),
    };
    let rule = {
        let mut s = state.lock().unwrap();
        s.calls.push(Call { action: action.clone(), body: body.clone() });
        for (a, hook) in &s.hooks {
            if *a == action {
                hook(&body);
            }
        }
        let State { rules, calls, .. } = &mut *s;
        let found = rules.iter_mut().find(|r| {
            r.action == action
                && body.contains(&r.body_contains)
                && r.times != Some(0)
                && r.after.as_ref().map_or(true, |a| calls.iter().any(|c| c.action == *a))
        });
        found.map(|r| {
            if let Some(t) = r.times.as_mut() {
                *t -= 1;
            }
            r.clone()
        })
    };

    let (status, content_type, answer) = match (action.as_str(), &rule) {
        (_, Some(Rule { effect: Effect::Fail { code, message }, .. })) => {
            if json {
                (400, JSON.to_string(), serde_json::json!({"__type": code, "message": message}).to_string())
            } else {
                (
                    400,
                    "text/xml".to_string(),
                    format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>proxy</RequestId></ErrorResponse>"),
                )
            }
        }
        ("StartSession", _) => {
            let id = {
                let mut s = state.lock().unwrap();
                s.sessions += 1;
                format!("xtask-test-session-{}", s.sessions)
            };
            let answer = serde_json::json!({
                "SessionId": id,
                "TokenValue": TOKEN,
                "StreamUrl": format!("wss://ssmmessages.us-east-1.amazonaws.com/v1/data-channel/{id}?role=publish_subscribe"),
            });
            (200, JSON.to_string(), answer.to_string())
        }
        ("TerminateSession", _) => {
            let req: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            (200, JSON.to_string(), serde_json::json!({"SessionId": req["SessionId"]}).to_string())
        }
        _ => {
            let (mut status, mut ctype, mut answer) = forward(upstream_port, &request_line, &headers, &body)?;
            match rule.as_ref().map(|r| &r.effect) {
                Some(Effect::LostAnswer { code }) => {
                    status = 500;
                    ctype = "text/xml".to_string();
                    answer = format!("<ErrorResponse><Error><Type>Receiver</Type><Code>{code}</Code><Message>the answer was lost</Message></Error><RequestId>proxy</RequestId></ErrorResponse>");
                }
                Some(Effect::Rewrite { from, to }) => answer = answer.replace(from.as_str(), to),
                Some(Effect::SetElements(pairs)) => {
                    for (tag, value) in pairs {
                        answer = set_elements(&answer, tag, value);
                    }
                }
                _ => {}
            }
            (status, ctype, answer)
        }
    };
    write!(
        client,
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    client.flush()
}

/// Sends the request to moto over a fresh connection; its status, content type and body.
fn forward(
    port: u16,
    request_line: &str,
    headers: &[(String, String)],
    body: &str,
) -> std::io::Result<(u16, String, String)> {
    let mut up = TcpStream::connect(("127.0.0.1", port))?;
    let mut out = request_line.trim_end().to_string() + "\r\n";
    for (k, v) in headers {
        if !["connection", "content-length"].contains(&k.to_ascii_lowercase().as_str()) {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
    up.write_all(out.as_bytes())?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(500);
    let mut ctype = "text/xml".to_string();
    let mut chunked = false;
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-type" => ctype = v.trim().to_string(),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
    }
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    Ok((status, ctype, body))
}

fn set_elements(xml: &str, tag: &str, value: &str) -> String {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = String::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = start + open.len();
        let Some(end) = rest[after..].find(&close) else { break };
        out.push_str(&rest[..after]);
        out.push_str(value);
        rest = &rest[after + end..];
    }
    out.push_str(rest);
    out
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n.min(rest.len())]);
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}
