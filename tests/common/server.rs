//! A `lecr serve` child process on a free loopback port, and small HTTP helpers.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub base: String,
    /// Studio's listener, when started with `--studio-addr`.
    pub studio: Option<String>,
}

impl Server {
    /// Starts `lecr serve ARGS --addr 127.0.0.1:0` and waits until `/health` says ready (it
    /// needs no key when the server has `--api-key`).
    pub fn start(args: &[&str]) -> Server {
        let mut s = Self::spawn(args);
        let t0 = Instant::now();
        loop {
            if let Ok((200, v)) = s.try_get("/health") {
                if v["phase"] == json!("ready") {
                    if !args.contains(&"--api-key") && !args.contains(&"--studio-addr") {
                        let connect = s.try_get("/stable/connect");
                        assert_eq!(connect, Ok((200, json!({"status": "OK"}))));
                    }
                    return s;
                }
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("lecr serve exited with {st}");
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "server not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn spawn(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lecr"))
            .arg("serve")
            .args(args)
            .args(["--addr", "127.0.0.1:0"])
            .env("LECR_NO_PROGRESS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let studio = args.contains(&"--studio-addr").then(|| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let addr = line
                .strip_prefix("also listening on http://")
                .and_then(|r| r.split('/').next())
                .unwrap_or_else(|| panic!("unexpected second line: {line:?}"));
            format!("http://{addr}")
        });
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        Server {
            child,
            base: format!("http://{addr}"),
            studio,
        }
    }

    pub fn try_get(&self, path: &str) -> Result<(u16, Value), String> {
        match ureq::get(&format!("{}{path}", self.base)).call() {
            Ok(r) => Ok((r.status(), r.into_json().map_err(|e| e.to_string())?)),
            Err(ureq::Error::Status(code, r)) => Ok((code, r.into_json().unwrap_or(Value::Null))),
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn text(&self, path: &str) -> String {
        ureq::get(&format!("{}{path}", self.base))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    }

    /// POSTs a raw body; returns status and JSON.
    pub fn post_raw(&self, path: &str, body: &str, key: Option<&str>) -> (u16, Value) {
        let mut req =
            ureq::post(&format!("{}{path}", self.base)).set("content-type", "application/json");
        if let Some(k) = key {
            req = req.set("authorization", &format!("Bearer {k}"));
        }
        match req.send_string(body) {
            Ok(r) => (r.status(), r.into_json().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string(), None)
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL: no shutdown, no cleanup
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status and stdout tail.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ids of a recommend answer's topic, in rank order.
pub fn ids(topic: &Value) -> Vec<String> {
    topic["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}
