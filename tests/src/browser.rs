//! Headless Chromium, driven through chromedriver (WebDriver), for the
//! dashboard tests: Debian's `chromium` and `chromium-driver`, which
//! `scripts/setup.sh` installs. Every call blocks until the browser answers
//! or a deadline passes, and a failure says what the page showed.

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::{
    local::{Background, free_port},
    split::require_program,
};

/// The window's width.
const WIDTH: u32 = 1360;

/// How long a wait for the page lasts.
const PATIENCE: Duration = Duration::from_secs(15);

/// A browser session, with its own download directory and screenshot folder.
pub struct Browser {
    client: Client,
    runtime: tokio::runtime::Runtime,
    /// Where downloads land.
    pub downloads: PathBuf,
    shots: PathBuf,
    /// Chromium's network log, read for failure messages.
    netlog: PathBuf,
    _driver: Background,
}

impl Browser {
    /// [`start`](Self::start) in this process's network namespace.
    pub fn local(dir: &Path, shots: &Path) -> Browser {
        Browser::start(dir, shots, |p| Command::new(p))
    }

    /// Starts chromedriver (through `wrap`, e.g. in a network namespace) and a
    /// headless Chromium session; screenshots go to `shots`.
    pub fn start(dir: &Path, shots: &Path, wrap: impl FnOnce(&Path) -> Command) -> Browser {
        let driver = require_program("chromedriver", "chromium-driver");
        let chromium = require_program("chromium", "chromium");
        let port = free_port();
        let mut cmd = wrap(&driver);
        // Chromium inherits this: its home is the test's, not the machine's.
        cmd.arg(format!("--port={port}")).env("HOME", dir);
        let driver = Background::start(
            cmd,
            dir.join(format!("chromedriver-{port}.log")),
            "was started successfully",
        );
        let downloads = dir.join(format!("downloads-{port}"));
        std::fs::create_dir_all(&downloads).unwrap();
        std::fs::create_dir_all(shots).unwrap();
        let profile = dir.join(format!("chromium-profile-{port}"));
        let netlog = dir.join(format!("chromium-netlog-{port}.json"));
        let options = json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-extensions", "--no-first-run",
                "--disable-sync", "--disable-component-update", "--disable-quic",
                // No keyring over D-Bus for the token's password field, and no
                // autofill queries to a network the machine does not reach.
                "--password-store=basic", "--disable-features=AutofillServerCommunication",
                "--window-size=1360,1000",
                format!("--user-data-dir={}", profile.display()),
                format!("--log-net-log={}", netlog.display()),
            ],
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
            },
        });
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = runtime
            .block_on(
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .unwrap_or_else(|e| panic!("no Chromium session: {e}\n{}", driver.log()));
        Browser {
            client,
            runtime,
            downloads,
            shots: shots.to_path_buf(),
            netlog,
            _driver: driver,
        }
    }

    /// Opens `url`.
    pub fn go(&self, url: &str) {
        self.runtime
            .block_on(self.client.goto(url))
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The first element matching `css`, waiting for it to appear.
    pub fn find(&self, css: &str) -> Element {
        let wait = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css));
        self.runtime
            .block_on(wait)
            .unwrap_or_else(|e| panic!("no {css:?} on the page ({e}): {}", self.what_went_wrong()))
    }

    /// Every element matching `css` now.
    pub fn all(&self, css: &str) -> Vec<Element> {
        self.runtime
            .block_on(self.client.find_all(Locator::Css(css)))
            .unwrap_or_default()
    }

    /// Types `text` into the field matching `css` (cleared first).
    pub fn fill(&self, css: &str, text: &str) {
        let field = self.find(css);
        self.runtime.block_on(async {
            field.clear().await.unwrap();
            field.send_keys(text).await.unwrap();
        });
    }

    /// Picks the option whose value is `value` in the `<select>` matching `css`.
    pub fn choose(&self, css: &str, value: &str) {
        let select = self.find(css);
        self.runtime
            .block_on(select.select_by_value(value))
            .unwrap_or_else(|e| panic!("{css:?} has no option {value:?}: {e}"));
    }

    /// Clicks the element matching `css`.
    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.runtime
            .block_on(element.click())
            .unwrap_or_else(|e| panic!("cannot click {css:?}: {e}"));
    }

    /// Tries `attempt` every 100 ms until it answers `Ok`; once [`PATIENCE`]
    /// has passed, fails the test with its last `Err` and
    /// [`what_went_wrong`](Self::what_went_wrong) (read only then).
    pub fn poll<T>(&self, mut attempt: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match attempt() {
                Ok(done) => return done,
                Err(why) if Instant::now() >= deadline => {
                    panic!("{why}: {}", self.what_went_wrong())
                }
                Err(_) => {}
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the button whose text is `text` inside the element matching `within`.
    pub fn press(&self, within: &str, text: &str) {
        self.poll(|| {
            let buttons = self.all(&format!("{within} button"));
            for b in buttons {
                // A button redrawn meanwhile is stale: look again.
                if self.runtime.block_on(b.text()).unwrap_or_default().trim() == text
                    && self.runtime.block_on(b.click()).is_ok()
                {
                    return Ok(());
                }
            }
            Err(format!("no button {text:?} in {within:?}"))
        })
    }

    /// The visible text of the element matching `css`.
    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.runtime.block_on(element.text()).unwrap_or_default()
    }

    /// Waits until the text of the element matching `css` contains `wanted`.
    pub fn wait_text(&self, css: &str, wanted: &str) -> String {
        self.poll(|| {
            let text = self.all(css).first().map_or(String::new(), |e| {
                self.runtime.block_on(e.text()).unwrap_or_default()
            });
            if text.contains(wanted) {
                return Ok(text);
            }
            Err(format!(
                "{css:?} never showed {wanted:?}; it shows {text:?}"
            ))
        })
    }

    /// Runs `script` in the page (`arguments` empty) and answers its value.
    pub fn run(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client.execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Opens a page of the dashboard at `base` (`#/hostnames`, …) and waits until it drew.
    /// (Drawn afresh: the same page again is reloaded.)
    pub fn page(&self, base: &str, path: &str) {
        let url = format!("{base}/#/{path}");
        let here = self.run(
            "document.querySelector('main')?.removeAttribute('data-ready'); return location.href",
        );
        if here == url.as_str() {
            self.runtime.block_on(self.client.refresh()).unwrap();
        } else {
            self.go(&url);
        }
        self.find(&format!("main[data-ready=\"{path}\"]"));
    }

    /// The whole page's text, for failure messages.
    pub fn page_text(&self) -> String {
        self.run("return document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(4000)
            .collect()
    }

    /// For failure messages: the page's text and the network errors Chromium
    /// logged (a page that says "Failed to fetch" does not say why).
    pub fn what_went_wrong(&self) -> String {
        let netlog = std::fs::read_to_string(&self.netlog).unwrap_or_default();
        let host = self.run("return location.host");
        format!(
            "{}\n[Chromium's network log so far: {}]",
            self.page_text(),
            crate::netlog::report(&netlog, host.as_str().unwrap_or("?"))
        )
    }

    /// Saves a PNG of the whole page (the window grown to its height) as
    /// `<shots>/<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let height = self
            .run("window.scrollTo(0, 0); return document.documentElement.scrollHeight")
            .as_u64()
            .unwrap_or(1000)
            // The window's own frame takes some of its height.
            .saturating_add(200)
            .clamp(1000, 6000);
        let png = self.runtime.block_on(async {
            let _ = self.client.set_window_size(WIDTH, height as u32).await;
            let png = self.client.screenshot().await;
            let _ = self.client.set_window_size(WIDTH, 1000).await;
            png
        });
        let png = png.unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Waits for a downloaded file named `name` and reads it.
    pub fn downloaded(&self, name: &str) -> String {
        let path = self.downloads.join(name);
        self.poll(|| {
            if path.exists() {
                return Ok(());
            }
            Err(format!(
                "{name} was never downloaded to {}",
                self.downloads.display()
            ))
        });
        std::fs::read_to_string(path).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = self.runtime.block_on(client.close());
    }
}
