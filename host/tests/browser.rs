//! The dashboard end to end in headless Chromium: sign in through the form, see the suspended
//! connection first with its remediation, take a screenshot (written under the target
//! directory: `target/tmp/dashboard.png`).
//!
//! Chromium is driven through `chromedriver` with the W3C WebDriver protocol, spoken directly
//! over HTTP with the HTTP client the crate already has (no driver crate). Needs Debian's
//! `chromium` and `chromium-driver` packages (`.ci/run` installs them); set
//! `DESKGATE_SKIP_BROWSER=1` to skip on a machine without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::TOKEN;
use serde_json::{Value, json};

/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib/chromium")]) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A chromedriver process, killed on drop.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(chromedriver: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let d = Self { child, base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = d.http.get(format!("{}/status", d.base)).send().await {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        d
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rb = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status();
        let v: Value = r.json().await.expect("WebDriver answers JSON");
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v["value"].clone()
    }
}

/// One browser session.
struct Session<'d> {
    driver: &'d Driver,
    id: String,
}

impl<'d> Session<'d> {
    async fn new(driver: &'d Driver, chromium: &Path) -> Self {
        // Element look-ups wait (up to 10 s) for the element to appear: a form post navigates.
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "timeouts": {"implicit": 10_000, "pageLoad": 30_000},
            "goog:chromeOptions": {
                "binary": chromium.to_str().unwrap(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1600", "--hide-scrollbars", "--no-first-run"]
            }
        }}});
        let v = driver.call(reqwest::Method::POST, "/session", Some(caps)).await;
        Self { driver, id: v["sessionId"].as_str().expect("session id").to_owned() }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.driver.call(reqwest::Method::POST, &format!("/session/{}{path}", self.id), Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.driver.call(reqwest::Method::GET, &format!("/session/{}{path}", self.id), None).await
    }

    async fn element(&self, css: &str) -> String {
        let v = self.post("/element", json!({"using": "css selector", "value": css})).await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_owned()
    }

    async fn text_of(&self, css: &str) -> String {
        let e = self.element(css).await;
        self.get(&format!("/element/{e}/text")).await.as_str().unwrap_or_default().to_owned()
    }

    /// Wait for the page navigated to by a form post: its title (the machine is shared and
    /// loaded, so the redirect may still be in flight when the click returns).
    async fn wait_for_title(&self, title: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.get("/title").await;
            if now == title {
                return;
            }
            assert!(Instant::now() < deadline, "the page's title stayed {now}, expected {title}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn close(self) {
        self.driver.call(reqwest::Method::DELETE, &format!("/session/{}", self.id), None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium_shows_the_suspension_first_with_its_remediation() {
    let chromium = find_binary(&["chromium", "chromium-browser"]);
    let chromedriver = find_binary(&["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        if std::env::var_os("DESKGATE_SKIP_BROWSER").is_some() {
            eprintln!("DESKGATE_SKIP_BROWSER is set and chromium is missing: skipped");
            return;
        }
        panic!("chromium and chromedriver are needed: apt-get install chromium chromium-driver (.ci/run does), or set DESKGATE_SKIP_BROWSER=1");
    };
    let (g, z) = common::populated().await;
    let driver = Driver::start(&chromedriver).await;
    let s = Session::new(&driver, &chromium).await;

    // Unsigned: the form, nothing else.
    s.post("/url", json!({"url": format!("{}/", g.base)})).await;
    s.wait_for_title("deskgate: sign in").await;
    let source = s.get("/source").await.as_str().unwrap().to_owned();
    assert!(!source.contains("acme"), "no data before sign-in");

    // A wrong token is refused with the reason.
    let field = s.element("#token").await;
    s.post(&format!("/element/{field}/value"), json!({"text": "wrong-token"})).await;
    let button = s.element("#sign-in").await;
    s.post(&format!("/element/{button}/click"), json!({})).await;
    assert!(s.text_of("#login-error").await.contains("not the gateway's API token"));

    // The right one: the dashboard.
    let field = s.element("#token").await;
    s.post(&format!("/element/{field}/value"), json!({"text": TOKEN})).await;
    let button = s.element("#sign-in").await;
    s.post(&format!("/element/{button}/click"), json!({})).await;
    s.wait_for_title("deskgate").await;

    // The suspended connection comes first on the page, with the reason, the probe's
    // remediation and the command that fixes it.
    let first_section = s.element("main > section").await;
    assert_eq!(s.get(&format!("/element/{first_section}/attribute/id")).await, "suspended");
    let banner = s.text_of("#suspended-acme-readonly").await;
    assert!(banner.contains("is suspended"), "{banner}");
    assert!(banner.contains("Re-authorize the OAuth client with read and write scopes."), "{banner}");
    assert!(banner.contains("set-status"), "the missing capability is named: {banner}");
    let remediation = s.text_of("#suspended-acme-readonly .remediation").await;
    assert!(!remediation.trim().is_empty(), "the platform's remediation is shown");
    assert!(banner.contains("deskgate probe acme-readonly"), "{banner}");
    // The live connection with its budget gauges, and the alerts.
    let row = s.text_of("#conn-acme").await;
    assert!(row.contains("live") && row.contains("zendesk"), "{row}");
    assert!(!s.text_of("#detail-acme table.budget").await.is_empty());
    assert!(s.text_of("#alerts").await.contains("Grant `write` to acme-readonly"));
    let source = s.get("/source").await.as_str().unwrap().to_owned();
    for secret in [z.full.token.as_str(), z.read_only.token.as_str(), TOKEN] {
        assert!(!source.contains(secret), "a secret reached the browser");
    }
    // The session cookie is invisible to scripts (HttpOnly).
    let cookie = s.post("/execute/sync", json!({"script": "return document.cookie", "args": []})).await;
    assert_eq!(cookie, "", "document.cookie must not expose the session");

    // The screenshot, for people to look at.
    let png = s.get("/screenshot").await;
    let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &bytes).unwrap();
    eprintln!("screenshot: {}", path.display());
    s.close().await;
}
