//! Shared helpers for the simulator's integration tests: a tiny HTTP client over hyper-util, a
//! webhook receiver, and sim start-up with a frozen clock.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use deskgate_sim::{Platform, SimConfig, SimHandle};
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::sync::mpsc;

/// 2024-01-01T00:00:00Z.
pub const T0: i64 = 1_704_067_200_000;

pub async fn sim(platform: Platform) -> SimHandle {
    deskgate_sim::start(SimConfig::new(platform).frozen_at(T0))
        .await
        .expect("sim starts")
}

pub async fn sim_seeded(platform: Platform, seed: u64) -> SimHandle {
    deskgate_sim::start(SimConfig::new(platform).frozen_at(T0).seed(seed))
        .await
        .expect("sim starts")
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    pub base: String,
    pub auth: Option<String>,
}

impl Http {
    pub fn new(base: impl Into<String>) -> Http {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        Http {
            client: Client::builder(TokioExecutor::new()).build(conn),
            base: base.into(),
            auth: None,
        }
    }
    pub fn with_auth(&self, auth: impl Into<String>) -> Http {
        Http {
            auth: Some(auth.into()),
            ..self.clone()
        }
    }
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let raw = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.send_raw(method, path, raw, headers)
            .await
            .expect("request answered")
    }
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Resp, String> {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        };
        let mut b = Request::builder().method(method).uri(url);
        if let Some(a) = &self.auth {
            b = b.header("authorization", a);
        }
        let has_body = body.is_some();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if has_body
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            b = b.header("content-type", "application/json");
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }
    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, &[]).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(body), &[]).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.send(Method::PUT, path, Some(body), &[]).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None, &[]).await
    }
}

pub fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// One webhook request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Hook {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Hook {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A webhook receiver on 127.0.0.1: records every request and answers with the statuses queued
/// in `script` (then 200).
pub struct Receiver {
    pub url: String,
    pub rx: mpsc::UnboundedReceiver<Hook>,
    pub script: Arc<Mutex<Vec<u16>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let script: Arc<Mutex<Vec<u16>>> = Arc::default();
        let s2 = script.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                let script = s2.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let tx = tx.clone();
                            let script = script.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let _ = tx.send(Hook {
                                    headers: parts.headers,
                                    body,
                                });
                                let status = {
                                    let mut s = script.lock().unwrap();
                                    if s.is_empty() { 200 } else { s.remove(0) }
                                };
                                let mut r = hyper::Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(r)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            rx,
            script,
        }
    }

    /// Next webhook, or panic after 5 s.
    pub async fn next(&mut self) -> Hook {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("webhook within 5 s")
            .expect("open")
    }

    /// Collects webhooks until none arrives for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Hook> {
        let mut out = Vec::new();
        while let Ok(Some(h)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            out.push(h);
        }
        out
    }
}

/// Waits (polling, bounded) until `f` is true.
pub async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}
