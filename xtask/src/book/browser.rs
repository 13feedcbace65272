//! Headless Chromium, driven over its DevTools protocol on a pipe.
//!
//! Chromium started with `--remote-debugging-pipe` reads protocol commands
//! from its file descriptor 3 and writes answers and events to descriptor
//! 4, one JSON message each, ended by a NUL byte. This is the protocol the
//! browser's own test tools speak, with none of their machinery:
//!
//! - no WebSocket client and no port to find or to collide on (as with
//!   `--remote-debugging-port`), and no protocol crate: `headless_chrome`
//!   locks 138 crates, among them a WebSocket client, serde's derive
//!   macros, and a generator of the whole protocol's bindings that runs at
//!   build time. The only new dependency here is `serde_json`, which adds
//!   about six seconds to a cold build of the harness on two cores;
//! - one browser for every page: Chromium takes one to two seconds to
//!   start, paid once, where `--screenshot` or `--dump-dom` pay it for
//!   every page and every question, cannot ask the page anything once it
//!   has loaded, and cannot size a screenshot to a page they have not
//!   measured;
//! - clear errors: a page that fails to load or a script that throws comes
//!   back as Chromium's own message, and a browser that stops answering is
//!   given up after [`ANSWER_TIMEOUT`], with the end of its log.
//!
//! The descriptors are put in place by `sh` (`3<&0 4>&1`), so the harness
//! needs no `unsafe` code to arrange them before `exec`.

use crate::progress;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The program `apt-get install chromium` puts on `PATH`.
pub const PROGRAM: &str = "chromium";

/// The longest wait for one answer (or for a page's load event).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The browser window: wide enough that mdBook shows its table of contents
/// beside the chapter, as on a desktop.
const WINDOW: (u32, u32) = (1200, 900);

/// A running headless Chromium with one page open.
pub struct Browser {
    child: Child,
    commands: ChildStdin,
    /// Chromium's messages, read from its pipe by a thread of their own
    /// (so that a wait can time out); an error where one was not JSON.
    messages: Receiver<Result<Value, String>>,
    next_id: u64,
    /// The DevTools session of the page all commands go to.
    session: String,
    /// Whether the page has fired its load event since the last navigation.
    loaded: bool,
    log: PathBuf,
}

impl Browser {
    /// Starts Chromium with a fresh profile in `profile` (removed first)
    /// and its own output going to `log`, and opens a blank page.
    ///
    /// `--no-sandbox`: the browser opens only this repository's own pages,
    /// and its sandbox needs user namespaces, which containers and CI
    /// machines often lack, or a non-root user.
    pub fn launch(profile: &Path, log: &Path) -> Result<Browser> {
        let _ = std::fs::remove_dir_all(profile);
        std::fs::create_dir_all(profile).with_context(|| format!("creating {}", profile.display()))?;
        let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#)
            .arg(PROGRAM)
            .args(["--headless", "--no-sandbox", "--remote-debugging-pipe", "--no-first-run"])
            .args(["--no-default-browser-check", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
            .args(["--disable-extensions", "--disable-sync", "--disable-component-update", "--mute-audio"])
            .arg("--force-device-scale-factor=1")
            .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {PROGRAM}"))?;
        let (Some(commands), Some(answers)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("starting {PROGRAM}: no pipes to it");
        };
        let (sender, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(answers);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop_if(|b| *b == 0);
                let parsed = serde_json::from_slice(&message).map_err(|e| e.to_string());
                if sender.send(parsed).is_err() {
                    break;
                }
                message.clear();
            }
        });
        let mut browser =
            Browser { child, commands, messages, next_id: 0, session: String::new(), loaded: false, log: log.to_path_buf() };
        let target = browser.call_browser("Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = text(&target, "targetId")?;
        let attached = browser.call_browser("Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }))?;
        browser.session = text(&attached, "sessionId")?.to_string();
        browser.call("Page.enable", json!({}))?;
        Ok(browser)
    }

    /// Opens `url` in the page and waits for its load event: every picture
    /// and script the page names has loaded or failed by then.
    pub fn open(&mut self, url: &str) -> Result<()> {
        self.loaded = false;
        let navigated = self.call("Page.navigate", json!({ "url": url }))?;
        if let Some(error) = navigated.get("errorText").and_then(Value::as_str) {
            bail!("{PROGRAM} could not open {url}: {error}");
        }
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        while !self.loaded {
            self.next_message(deadline, &format!("loading {url}"))?;
        }
        Ok(())
    }

    /// Runs `script`, an expression whose value (or whose promise's value)
    /// is a string, in the page, and returns that string.
    pub fn evaluate(&mut self, script: &str) -> Result<String> {
        let params = json!({ "expression": script, "awaitPromise": true, "returnByValue": true });
        let answer = self.call("Runtime.evaluate", params)?;
        if let Some(details) = answer.get("exceptionDetails") {
            let why = details.pointer("/exception/description").or_else(|| details.get("text")).unwrap_or(details);
            bail!("the page's check script failed: {}", why.as_str().map_or_else(|| why.to_string(), str::to_string));
        }
        match answer.pointer("/result/value") {
            Some(Value::String(value)) => Ok(value.clone()),
            other => bail!("the page's check script returned {other:?}, not a string"),
        }
    }

    /// A PNG of the whole page, not only the window's part of it.
    pub fn screenshot(&mut self) -> Result<Vec<u8>> {
        let metrics = self.call("Page.getLayoutMetrics", json!({}))?;
        let size = |key: &str| metrics.pointer(&format!("/cssContentSize/{key}")).and_then(Value::as_f64).unwrap_or(0.0);
        let (width, height) = (size("width").max(1.0).ceil(), size("height").max(1.0).ceil());
        let clip = json!({ "x": 0, "y": 0, "width": width, "height": height, "scale": 1 });
        // Encoding for speed halved the time of the longest chapters'
        // screenshots (40,000 px tall), for files a quarter larger.
        let params = json!({ "format": "png", "captureBeyondViewport": true, "optimizeForSpeed": true, "clip": clip });
        let shot = self.call("Page.captureScreenshot", params)?;
        decode_base64(text(&shot, "data")?).context("decoding the screenshot")
    }

    /// Sends a command to the page and waits for its answer.
    fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let session = Some(self.session.clone());
        self.send(method, params, session)
    }

    /// Sends a command to the browser itself and waits for its answer.
    fn call_browser(&mut self, method: &str, params: Value) -> Result<Value> {
        self.send(method, params, None)
    }

    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = Value::String(session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        if let Err(e) = self.commands.write_all(&bytes).and_then(|()| self.commands.flush()) {
            bail!("{PROGRAM} stopped reading commands ({e}); {}", self.log_tail());
        }
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let answer = self.next_message(deadline, method)?;
            if answer.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                bail!("{PROGRAM} refused {method}: {}", error.get("message").and_then(Value::as_str).unwrap_or("no reason given"));
            }
            return Ok(answer.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// The next message from the browser; notes the page's load event.
    fn next_message(&mut self, deadline: Instant, doing: &str) -> Result<Value> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.messages.recv_timeout(wait) {
            Ok(Err(e)) => bail!("{PROGRAM} sent a message that is not JSON ({doing}): {e}"),
            Ok(Ok(message)) => {
                if message.get("method").and_then(Value::as_str) == Some("Page.loadEventFired") {
                    self.loaded = true;
                }
                Ok(message)
            }
            Err(RecvTimeoutError::Timeout) => {
                bail!("{PROGRAM} did not answer within {} s ({doing}); {}", ANSWER_TIMEOUT.as_secs(), self.log_tail())
            }
            Err(RecvTimeoutError::Disconnected) => bail!("{PROGRAM} quit ({doing}); {}", self.log_tail()),
        }
    }

    /// The last lines Chromium wrote to its log, for an error message.
    fn log_tail(&self) -> String {
        format!("the end of its log, {}:\n{}", self.log.display(), progress::tail(&self.log, 8))
    }
}

impl Drop for Browser {
    /// Asks Chromium to quit, and stops it if it has not after a moment.
    fn drop(&mut self) {
        let _ = self.commands.write_all(b"{\"id\":0,\"method\":\"Browser.close\"}\0");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().is_ok_and(|status| status.is_some()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The string `key` of an answer.
fn text<'a>(answer: &'a Value, key: &str) -> Result<&'a str> {
    match answer.get(key) {
        Some(Value::String(value)) => Ok(value),
        _ => bail!("{PROGRAM}'s answer has no `{key}`: {answer}"),
    }
}

/// Decodes standard base64 (RFC 4648 section 4, with padding), the
/// protocol's encoding of binary data. Four digits at a time, through a
/// table: a screenshot is megabytes, and the harness is built unoptimized.
pub fn decode_base64(text: &str) -> Result<Vec<u8>> {
    const NOT_A_DIGIT: u8 = 0xff;
    const DIGITS: [u8; 256] = {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut table = [NOT_A_DIGIT; 256];
        let mut i = 0;
        while i < alphabet.len() {
            table[alphabet[i] as usize] = i as u8;
            i += 1;
        }
        table
    };
    let body = text.trim_end_matches('=');
    if !text.len().is_multiple_of(4) || text.len() - body.len() > 2 {
        bail!("base64 of {} characters is not padded to a multiple of four", text.len());
    }
    let mut bytes = Vec::with_capacity(body.len() / 4 * 3 + 2);
    for group in body.as_bytes().chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in group.iter().enumerate() {
            let digit = DIGITS[usize::from(c)];
            if digit == NOT_A_DIGIT {
                bail!("`{}` is not a base64 digit", c.escape_ascii());
            }
            bits |= u32::from(digit) << (18 - 6 * i);
        }
        // Four digits are three bytes; a last group of three or two, two or one.
        bytes.extend_from_slice(&bits.to_be_bytes()[1..group.len()]);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn base64_decodes_rfc_4648_test_vectors() {
        // RFC 4648 section 10.
        let vectors = [("", ""), ("Zg==", "f"), ("Zm8=", "fo"), ("Zm9v", "foo"), ("Zm9vYg==", "foob"), ("Zm9vYmE=", "fooba")];
        for (text, bytes) in vectors {
            assert_eq!(decode_base64(text).unwrap(), bytes.as_bytes(), "{text}");
        }
        assert_eq!(decode_base64("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(decode_base64("iVBORw0KGgo=").unwrap(), b"\x89PNG\r\n\x1a\n", "the start of a PNG");
        assert_eq!(decode_base64("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
    }

    #[test]
    fn base64_refuses_what_is_not_base64() {
        assert!(decode_base64("Zm9").is_err(), "not padded");
        assert!(decode_base64("Zm9v====").is_err(), "too much padding");
        assert!(decode_base64("Zm-v").is_err(), "the URL-safe alphabet");
        assert!(decode_base64("Zm 9").is_err(), "a space");
    }
}
