//! The built-in HTTP transport: blocking, small, rustls (no OpenSSL), suited
//! to phones. Calls block; run them off the UI thread.

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Transport;
use crate::error::{Error, Result};
use crate::protocol::{BlobStatus, ErrorBody, LoginRequest, LoginResponse, CONTENT_TYPE};

/// Largest response body accepted.
const MAX_RESPONSE: u64 = 256 << 20;

/// Talks to a relay at `base_url` (e.g. `http://127.0.0.1:8080`) with a
/// bearer token. Counts the bytes it sends and receives.
#[derive(Debug)]
pub struct HttpTransport {
    base: String,
    token: String,
    agent: ureq::Agent,
    sent: AtomicU64,
    received: AtomicU64,
}

impl HttpTransport {
    pub fn new(base_url: &str, token: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .build()
            .into();
        HttpTransport {
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            agent,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }

    /// Signs in and returns a transport carrying the new token.
    pub fn login(base_url: &str, username: &str, password: &str) -> Result<(Self, LoginResponse)> {
        let mut transport = HttpTransport::new(base_url, "");
        let body = serde_json::to_vec(&LoginRequest {
            username: username.to_string(),
            password: password.to_string(),
        })
        .map_err(|e| Error::Protocol(e.to_string()))?;
        let bytes = transport.post("/v1/login", "application/json", &body)?;
        let login: LoginResponse = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Protocol(format!("unreadable login response: {e}")))?;
        transport.token = login.token.clone();
        Ok((transport, login))
    }

    /// Ends this sign-in at the relay: the token stops working (the user's
    /// other devices stay signed in).
    pub fn logout(&self) -> Result<()> {
        self.post("/v1/logout", "application/json", b"{}")?;
        Ok(())
    }

    /// (bytes sent, bytes received) in request and response bodies.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }

    /// Blocks until the relay announces that its log advanced past
    /// `cursor`, or `timeout` passes. Returns whether it did.
    pub fn wait_for_change(&self, cursor: u64, timeout: Duration) -> Result<bool> {
        Transport::wait_for_change(self, cursor, timeout)
    }

    /// The bearer token, for an app to keep between launches (in the
    /// platform's secure storage) and to use with its own HTTP stack.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The relay's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn wait_for_events(&self, cursor: u64, timeout: Duration) -> Result<bool> {
        let url = format!("{}/v1/events?after={cursor}", self.base);
        let mut response = self
            .agent
            .get(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("authorization", format!("Bearer {}", self.token))
            .call()
            .map_err(network)?;
        if response.status().as_u16() != 200 {
            return Err(status_error(response.status().as_u16(), &[]));
        }
        let reader = std::io::BufReader::new(response.body_mut().as_reader());
        for line in reader.lines() {
            match line {
                Ok(line) if line.starts_with("data:") => return Ok(true),
                Ok(_) => continue,
                Err(_) => return Ok(false),
            }
        }
        Ok(false)
    }

    /// Reads a response: its body (counted, bounded) if the status is
    /// `ok`, else the relay's error.
    fn answer(
        &self,
        mut response: ureq::http::Response<ureq::Body>,
        ok: &[u16],
    ) -> Result<Vec<u8>> {
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(network)?;
        self.received
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if !ok.contains(&status) {
            return Err(status_error(status, &bytes));
        }
        Ok(bytes)
    }

    fn blob_url(&self, sha256: &str) -> Result<String> {
        if !crate::attachment::is_sha256(sha256) {
            return Err(Error::invalid("sha256", sha256, "64 lower-case hex digits"));
        }
        Ok(format!("{}/v1/blobs/{sha256}", self.base))
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.post(&url).content_type(content_type);
        if !self.token.is_empty() {
            request = request.header("authorization", format!("Bearer {}", self.token));
        }
        self.sent.fetch_add(body.len() as u64, Ordering::Relaxed);
        let response = request.send(body).map_err(network)?;
        self.answer(response, &[200])
    }
}

impl Transport for HttpTransport {
    fn exchange(&self, request: &[u8]) -> Result<Vec<u8>> {
        self.post("/v1/sync", CONTENT_TYPE, request)
    }

    fn wait_for_change(&self, cursor: u64, timeout: Duration) -> Result<bool> {
        self.wait_for_events(cursor, timeout)
    }

    fn blob_status(&self, sha256: &str) -> Result<Option<BlobStatus>> {
        let response = self
            .agent
            .get(format!("{}/status", self.blob_url(sha256)?))
            .header("authorization", format!("Bearer {}", self.token))
            .call()
            .map_err(network)?;
        let bytes = self.answer(response, &[200])?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Protocol(format!("unreadable blob status: {e}")))
    }

    fn put_blob_chunk(&self, sha256: &str, offset: u64, bytes: &[u8]) -> Result<BlobStatus> {
        self.sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let response = self
            .agent
            .put(self.blob_url(sha256)?)
            .header("authorization", format!("Bearer {}", self.token))
            .header("upload-offset", offset.to_string())
            .content_type("application/octet-stream")
            .send(bytes)
            .map_err(network)?;
        let body = self.answer(response, &[200])?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::Protocol(format!("unreadable blob status: {e}")))
    }

    fn get_blob_range(&self, sha256: &str, from: u64, len: u64) -> Result<Vec<u8>> {
        let last = from + len.max(1) - 1;
        let response = self
            .agent
            .get(self.blob_url(sha256)?)
            .header("authorization", format!("Bearer {}", self.token))
            .header("range", format!("bytes={from}-{last}"))
            .call()
            .map_err(network)?;
        self.answer(response, &[200, 206])
    }
}

fn network(e: ureq::Error) -> Error {
    Error::Transport {
        status: None,
        message: e.to_string(),
    }
}

fn status_error(status: u16, body: &[u8]) -> Error {
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => format!("relay answered {status} ({}): {}", b.error, b.message),
        Err(_) => format!("relay answered {status}"),
    };
    Error::Transport {
        status: Some(status),
        message,
    }
}
