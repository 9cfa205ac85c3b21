//! A real headless Chromium driven over WebDriver (W3C JSON over HTTP) by its ChromeDriver.
//!
//! Written over reqwest rather than taken from fantoccini: the tests use ten endpoints of the
//! protocol, and fantoccini would add the `webdriver` crate (with ICU segmentation data), `time`,
//! `cookie` and a second HTTP client stack to a build that already has reqwest.
//!
//! Environment (scripts/test.sh installs Debian's `chromium` and `chromium-driver` if missing):
//! `CRONBOX_CHROMEDRIVER` (default `chromedriver`), `CRONBOX_CHROMIUM` (default
//! `/usr/bin/chromium`). Each browser gets its own driver port and profile directory; both die
//! with the value (the driver runs in its own process group, which takes Chromium with it).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::{Child, Command};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver_url: String,
    driver: Child,
    _profile: tempdir::Dir,
}

/// A page element the driver knows by id.
#[derive(Debug, Clone)]
pub struct El(String);

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Where screenshots go: `target/screenshots/` (a test artifact, not committed).
pub fn screenshot_dir() -> PathBuf {
    let root = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{}/target", env!("CARGO_MANIFEST_DIR")));
    PathBuf::from(root).join("screenshots")
}

impl Browser {
    pub async fn start() -> Self {
        Self::start_with_lang("ru-RU,ru").await
    }

    /// A browser whose `Accept-Language` is `lang`.
    pub async fn start_with_lang(lang: &str) -> Self {
        let driver_bin = std::env::var("CRONBOX_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chromium = std::env::var("CRONBOX_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let port = super::free_port();
        let mut cmd = Command::new(&driver_bin);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let driver = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {driver_bin} (scripts/test.sh installs chromium-driver): {e}"));
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{driver_url}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("cbx-chrome-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).expect("a profile directory");
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,900".into(),
            format!("--lang={}", lang.split(',').next().unwrap_or("ru")),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args, "prefs": {"intl.accept_languages": lang}},
        }}});
        let r: Value = http
            .post(format!("{driver_url}/session"))
            .json(&caps)
            .send()
            .await
            .expect("a WebDriver session")
            .json()
            .await
            .expect("a WebDriver answer");
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Browser {
            http,
            session,
            driver_url,
            driver,
            _profile: tempdir::Dir(profile),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    async fn try_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.driver_url, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match r["value"]["error"].as_str() {
            Some(e) => Err(format!("{e}: {}", r["value"]["message"])),
            None => Ok(r["value"].clone()),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn title(&self) -> String {
        self.call(reqwest::Method::GET, "/title", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element `css` selects, waiting up to 10 s for it to exist.
    pub async fn find(&self, css: &str) -> El {
        self.wait_for(css, Duration::from_secs(10)).await
    }

    pub async fn try_find(&self, css: &str) -> Option<El> {
        let body = json!({"using": "css selector", "value": css});
        let v = self
            .try_call(reqwest::Method::POST, "/element", Some(body))
            .await
            .ok()?;
        v[ELEMENT].as_str().map(|s| El(s.to_string()))
    }

    pub async fn wait_for(&self, css: &str, timeout: Duration) -> El {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            if Instant::now() > deadline {
                let shot = self
                    .screenshot(&format!("missing-{}", css.replace(|c: char| !c.is_alphanumeric(), "_")))
                    .await;
                panic!(
                    "no element {css} on {} within {timeout:?} (screenshot {shot:?})",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page's text contains `text`.
    pub async fn wait_text(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.page_text().await.contains(text) {
                return;
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("missing-text").await;
                panic!(
                    "{text:?} did not appear on {} within {timeout:?} (screenshot {shot:?}); the page says:\n{}",
                    self.url().await,
                    self.page_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn page_text(&self) -> String {
        self.js("return document.body ? document.body.innerText : ''", vec![])
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn click(&self, e: &El) {
        let path = format!("/element/{}/click", e.0);
        self.call(reqwest::Method::POST, &path, Some(json!({}))).await;
    }

    /// Finds `css` and clicks it, finding it again if the page replaced it in between (a page
    /// that updates itself, like the live log); up to 20 tries.
    pub async fn click_css(&self, css: &str) {
        for _ in 0..20 {
            let e = self.find(css).await;
            let path = format!("/element/{}/click", e.0);
            match self.try_call(reqwest::Method::POST, &path, Some(json!({}))).await {
                Ok(_) => return,
                Err(err) if err.starts_with("stale element reference") => continue,
                Err(err) => panic!("click {css}: {err}"),
            }
        }
        panic!("{css} kept being replaced before it could be clicked");
    }

    pub async fn type_into(&self, e: &El, text: &str) {
        let path = format!("/element/{}/clear", e.0);
        self.call(reqwest::Method::POST, &path, Some(json!({}))).await;
        let path = format!("/element/{}/value", e.0);
        self.call(reqwest::Method::POST, &path, Some(json!({ "text": text })))
            .await;
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.type_into(&e, text).await;
    }

    pub async fn text(&self, e: &El) -> String {
        let path = format!("/element/{}/text", e.0);
        self.call(reqwest::Method::GET, &path, None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `script` in the page (`arguments[i]` are `args`) and returns its result.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs axe-core (vendored for the tests, `tests/vendor/axe-core`) on the current page and
    /// returns its `serious` and `critical` violations as `"rule: target, …"` lines.
    pub async fn accessibility_problems(&self) -> Vec<String> {
        const AXE: &str = include_str!("../../vendor/axe-core/axe.min.js");
        if self.js("return typeof window.axe", vec![]).await != "object" {
            self.js(&format!("{AXE}\nreturn true;"), vec![]).await;
        }
        let v = self
            .call(
                reqwest::Method::POST,
                "/execute/async",
                Some(json!({"script": "const done = arguments[arguments.length - 1];
                    axe.run(document, {resultTypes: ['violations']})
                      .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact,
                         help: v.help, targets: v.nodes.map(n => n.target.join(' '))}))))
                      .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), targets: []}]));",
                    "args": []})),
            )
            .await;
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|x| matches!(x["impact"].as_str(), Some("serious" | "critical")))
            .map(|x| format!("{} ({}): {} at {}", x["id"], x["impact"], x["help"], x["targets"]))
            .collect()
    }

    /// The element as a script argument.
    pub fn arg(e: &El) -> Value {
        json!({ ELEMENT: e.0 })
    }

    /// Sets a form control's value as typing would, firing `input` and `change`.
    pub async fn set_value(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        self.js(
            "arguments[0].value = arguments[1];
             arguments[0].dispatchEvent(new Event('input', {bubbles: true}));
             arguments[0].dispatchEvent(new Event('change', {bubbles: true}));",
            vec![Self::arg(&e), json!(value)],
        )
        .await;
    }

    /// Saves a PNG of the viewport as `target/screenshots/<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let dir = screenshot_dir();
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{name}.png"));
        if let Ok(v) = self.try_call(reqwest::Method::GET, "/screenshot", None).await {
            if let Some(b64) = v.as_str() {
                if let Ok(png) = base64::engine::general_purpose::STANDARD.decode(b64) {
                    let _ = std::fs::write(&path, png);
                }
            }
        }
        path
    }

    /// Opens a new tab and returns its handle (the current tab stays current).
    pub async fn new_tab(&self) -> String {
        let v = self
            .call(reqwest::Method::POST, "/window/new", Some(json!({"type": "tab"})))
            .await;
        v["handle"].as_str().unwrap_or_default().to_string()
    }

    pub async fn window(&self) -> String {
        self.call(reqwest::Method::GET, "/window", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn switch_to(&self, handle: &str) {
        self.call(reqwest::Method::POST, "/window", Some(json!({ "handle": handle })))
            .await;
    }

    pub async fn close(mut self) {
        let _ = self.try_call(reqwest::Method::DELETE, "", None).await;
        let _ = self.driver.kill().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that failed before `close`: end the session with a blocking request (no
        // runtime here), so ChromeDriver closes Chromium; the driver dies with `kill_on_drop`.
        use std::io::{Read, Write};
        let Some(addr) = self.driver_url.strip_prefix("http://") else {
            return;
        };
        let Ok(mut c) = std::net::TcpStream::connect(addr) else {
            return;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let req = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session
        );
        if c.write_all(req.as_bytes()).is_ok() {
            let mut sink = Vec::new();
            let _ = c.read_to_end(&mut sink);
        }
    }
}
