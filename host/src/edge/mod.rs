//! `deskgate edge`: the self-hosted gateway serves the Spin edge component itself.
//!
//! The edge (`components/edge`) is a `wasi:http` 0.2 component written with spin-sdk 5. Spin runs
//! it on the edge; this module runs the very same `.wasm` with `wasmtime-wasi-http`, so one edge
//! implementation serves Spin users and self-hosted users alike, and CI tests it without a Spin
//! binary. What the component imports is provided the way Spin provides it:
//!
//! - `wasi:http/outgoing-handler`, limited to [`EdgeConfig::allowed_outbound`] (Spin's
//!   `allowed_outbound_hosts`): any other destination is refused with `HttpRequestDenied`;
//! - `wasi:config/store@0.2.0-draft-2024-09-27` ([`config_store`]), from [`EdgeConfig::vars`]
//!   (Spin: component variables);
//! - `wasi:clocks/wall-clock` from a [`crate::clock::Clock`], so tests drive the replay window with
//!   the simulator's frozen clock;
//! - its adapter imports, one per platform, named by the platform's id (`zendesk`, ...; see
//!   [`adapter_imports`]): either already inside the component (pre-composed with
//!   `deskgate-edge-compose`, [`AdapterLink::Composed`]), or each linked here to a separately
//!   loaded adapter component of that id ([`AdapterLink::Linked`]), the way Spin's
//!   `[component.edge.dependencies]` satisfies them from the adapters' own `.wasm` files.
//!
//! Each request gets a fresh instance (as on Spin), created from a pre-instantiated
//! [`ProxyPre`]; a request that takes longer than [`EdgeConfig::request_timeout`] is answered 504.

pub mod config_store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::server::conn::http1;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{HostWallClock, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::bindings::{Connection, Failure, Webhook};
use crate::clock::SharedClock;
use crate::runtime::Adapter;

/// How the edge's adapter imports are satisfied.
#[derive(Clone)]
pub enum AdapterLink {
    /// The component already contains its adapters (pre-composed).
    Composed,
    /// Link each adapter import to the adapter of that id among these, loaded separately by the
    /// adapter runtime (its sandbox limits apply to every call the edge makes into it).
    Linked(Vec<Arc<Adapter>>),
}

impl std::fmt::Debug for AdapterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdapterLink::Composed => f.write_str("Composed"),
            AdapterLink::Linked(a) => f.debug_tuple("Linked").field(&a.iter().map(|a| a.id()).collect::<Vec<_>>()).finish(),
        }
    }
}

/// The edge's adapter imports: the imports of `component` with a plain name (every WASI and
/// deskgate interface is a `namespace:package/interface`), each named by a platform id.
fn adapter_imports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .filter(|(name, _)| !name.contains(':'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// What the edge runs with.
#[derive(Clone)]
pub struct EdgeConfig {
    /// `wasi:config/store` values: `core_url`, `core_token`, `conn_{id}_platform`,
    /// `conn_{id}_secret`, ... (see the edge crate's `keys` module).
    pub vars: BTreeMap<String, String>,
    /// Origins the component may send requests to (`http://127.0.0.1:8080`); everything else is
    /// denied. [`EdgeConfig::new`] allows exactly the origin of `core_url`.
    pub allowed_outbound: Vec<String>,
    /// The wall clock the component reads (the replay window).
    pub clock: SharedClock,
    /// The longest a request may take, forwarding and retries included.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for EdgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeConfig")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("allowed_outbound", &self.allowed_outbound)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// The origin (`scheme://host:port`) of a URL, as `allowed_outbound` lists them.
///
/// # Errors
/// When `url` is not an absolute http(s) URL.
pub fn origin_of(url: &str) -> anyhow::Result<String> {
    let u = url::Url::parse(url).map_err(|e| anyhow!("{url:?} is not a URL like http://127.0.0.1:8080: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        anyhow::bail!("{url:?} must be an http:// or https:// URL");
    }
    let host = u.host_str().ok_or_else(|| anyhow!("{url:?} has no host"))?;
    let port = u.port_or_known_default().unwrap_or(80);
    Ok(format!("{}://{host}:{port}", u.scheme()))
}

impl EdgeConfig {
    /// A configuration with these variables, allowed to reach only the origin of `core_url`.
    ///
    /// # Errors
    /// When `core_url` is missing or not an http(s) URL.
    pub fn new(vars: BTreeMap<String, String>, clock: SharedClock) -> anyhow::Result<Self> {
        let core = vars
            .get("core_url")
            .ok_or_else(|| anyhow!("the edge needs `core_url` (the core gateway's base URL): pass --config-var core_url=http://..."))?;
        let origin = origin_of(core).context("core_url")?;
        if !vars.contains_key("core_token") {
            anyhow::bail!("the edge needs `core_token` (the core's DESKGATE_EDGE_TOKEN): pass --config-var core_token=...");
        }
        Ok(Self { vars, allowed_outbound: vec![origin], clock, request_timeout: Duration::from_secs(30) })
    }
}

/// The names of a component's imports (for checking that an edge stays portable: no
/// Spin-only interface).
///
/// # Errors
/// When the bytes are not a component.
pub fn component_imports(component: &[u8]) -> anyhow::Result<Vec<String>> {
    let engine = Engine::default();
    let component = Component::new(&engine, component).map_err(anyhow::Error::from)?;
    Ok(component.component_type().imports(&engine).map(|(name, _)| name.to_owned()).collect())
}

/// Per-request store state.
struct EdgeState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: Hooks,
    vars: Arc<BTreeMap<String, String>>,
}

impl WasiView for EdgeState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for EdgeState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Outbound HTTP only to the allowed origins.
struct Hooks {
    allowed: Arc<Vec<String>>,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let uri = request.uri();
        let origin = uri
            .scheme_str()
            .zip(uri.authority())
            .map(|(s, a)| {
                let port = a.port_u16().unwrap_or(if s == "https" { 443 } else { 80 });
                format!("{s}://{}:{port}", a.host())
            })
            .unwrap_or_default();
        if !self.allowed.iter().any(|o| *o == origin) {
            tracing::warn!(destination = %origin, "edge: outbound request denied (not in allowed_outbound)");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// The component's view of time: a [`crate::clock::Clock`].
struct WallClock(SharedClock);

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now_ms()).unwrap_or(0))
    }
}

/// A loaded edge component, ready to serve requests.
pub struct EdgeServer {
    pre: ProxyPre<EdgeState>,
    config: EdgeConfig,
    vars: Arc<BTreeMap<String, String>>,
    allowed: Arc<Vec<String>>,
}

impl std::fmt::Debug for EdgeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeServer").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Define the adapter import `name` as calls into `adapter`.
fn link_adapter(linker: &mut Linker<EdgeState>, name: &str, adapter: Arc<Adapter>) -> anyhow::Result<()> {
    let mut inst = linker.instance(name)?;
    let a = adapter.clone();
    inst.func_wrap("describe", move |_store, (): ()| Ok((a.descriptor().clone(),)))?;
    let a = adapter;
    inst.func_wrap(
        "parse-webhook",
        move |_store, (conn, headers, body): (Connection, Vec<(String, String)>, Vec<u8>)| {
            let parsed: Result<Webhook, Failure> = a
                .parse_webhook(&conn, &headers, &body)
                .map_err(|e| wasmtime::Error::msg(format!("the {} adapter failed in parse-webhook: {e}", a.id())))?;
            Ok((parsed,))
        },
    )?;
    Ok(())
}

/// Satisfy each of the edge's adapter imports (`wanted`) as `link` says.
fn link_adapters(linker: &mut Linker<EdgeState>, wanted: &[String], link: &AdapterLink) -> anyhow::Result<()> {
    let adapters = match link {
        AdapterLink::Composed if wanted.is_empty() => return Ok(()),
        AdapterLink::Composed => anyhow::bail!(
            "the edge component imports the adapters {} (it is not pre-composed): pass --adapter for each, or serve the pre-composed edge (deskgate-edge-compose)",
            wanted.join(", ")
        ),
        AdapterLink::Linked(_) if wanted.is_empty() => anyhow::bail!(
            "the edge component has no adapter imports (it is pre-composed already): serve it without --adapter"
        ),
        AdapterLink::Linked(adapters) => adapters,
    };
    if let Some(extra) = adapters.iter().find(|a| !wanted.iter().any(|w| w == a.id())) {
        anyhow::bail!(
            "the edge component has no `{}` adapter import (it imports {}): leave out --adapter {}",
            extra.id(),
            wanted.join(", "),
            extra.id()
        );
    }
    // The types interface holds only types; it still has to exist as an instance.
    linker.instance("deskgate:adapter/types@0.1.0")?;
    for name in wanted {
        let adapter = adapters.iter().find(|a| a.id() == name).ok_or_else(|| {
            anyhow!("the edge component imports the `{name}` adapter: pass --adapter {name} (a built-in id, or the adapter's .wasm)")
        })?;
        link_adapter(linker, name, adapter.clone())?;
    }
    Ok(())
}

impl EdgeServer {
    /// Compile `component` and link its imports.
    ///
    /// # Errors
    /// When the bytes are not a component, or it imports something this host does not provide
    /// (the message names the import): with [`AdapterLink::Composed`], an edge that still has
    /// adapter imports was not pre-composed; with [`AdapterLink::Linked`], each adapter import
    /// needs an adapter of its id, and each adapter an import.
    pub fn new(component: &[u8], adapter: AdapterLink, config: EdgeConfig) -> anyhow::Result<Self> {
        // An instance per request, as on Spin: the pooling allocator makes that a slot reset
        // instead of fresh mappings. Bounds: 256 requests in flight, four memories each (the
        // edge's and its three adapters'), 128 MiB per memory.
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(256)
            .total_core_instances(4096)
            .total_memories(1024)
            .total_tables(2048)
            .max_memory_size(128 << 20);
        // Reset a freed slot's dirtied pages in place (PAGEMAP_SCAN where the kernel has it)
        // rather than dropping them and faulting them back in on the next request.
        pool.pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true).allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm)?;
        let component = Component::new(&engine, component).map_err(anyhow::Error::from).context("the edge is not a loadable component")?;
        let mut linker: Linker<EdgeState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        config_store::add_to_linker(&mut linker, |s: &mut EdgeState| config_store::ConfigStore::new(&s.vars))?;
        link_adapters(&mut linker, &adapter_imports(&engine, &component), &adapter)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the edge component imports something this host does not provide")?;
        let pre = ProxyPre::new(pre).map_err(anyhow::Error::from).context("the component does not export wasi:http/incoming-handler@0.2")?;
        let vars = Arc::new(config.vars.clone());
        let allowed = Arc::new(config.allowed_outbound.clone());
        Ok(Self { pre, config, vars, allowed })
    }

    /// Handle one request in a fresh instance.
    ///
    /// # Errors
    /// When the component traps before answering, or never answers.
    pub async fn handle<B>(&self, req: hyper::Request<B>) -> anyhow::Result<hyper::Response<HyperOutgoingBody>>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stderr().wall_clock(WallClock(self.config.clock.clone()));
        let mut store = Store::new(
            self.pre.engine(),
            EdgeState {
                wasi: wasi.build(),
                table: ResourceTable::new(),
                http: WasiHttpCtx::new(),
                hooks: Hooks { allowed: self.allowed.clone() },
                vars: self.vars.clone(),
            },
        );
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store.data_mut().http().new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
        });
        match tokio::time::timeout(self.config.request_timeout, receiver).await {
            Err(_) => {
                task.abort();
                anyhow::bail!("the edge did not answer within {:?}", self.config.request_timeout)
            }
            Ok(Ok(Ok(resp))) => Ok(resp),
            Ok(Ok(Err(code))) => anyhow::bail!("the edge answered with an error: {code:?}"),
            Ok(Err(_)) => match task.await {
                Ok(Ok(())) => anyhow::bail!("the edge returned without answering"),
                Ok(Err(e)) => Err(anyhow::Error::from(e).context("the edge trapped before answering")),
                Err(e) => Err(anyhow!("the edge's task failed: {e}")),
            },
        }
    }

    /// Serve HTTP/1.1 on `listener` until `shutdown` resolves.
    ///
    /// # Errors
    /// When accepting connections fails.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        loop {
            let (sock, _) = tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = listener.accept() => accepted?,
            };
            let server = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let server = server.clone();
                    async move { Ok::<_, std::convert::Infallible>(server.respond(req).await) }
                });
                if let Err(e) = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(sock), service).await {
                    tracing::debug!(error = %e, "edge: connection ended with an error");
                }
            });
        }
    }

    /// [`Self::handle`], with failures answered as JSON 500 / 504 (logged).
    async fn respond(&self, req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<HyperOutgoingBody> {
        match self.handle(req).await {
            Ok(r) => r,
            Err(e) => {
                let timeout = e.to_string().contains("did not answer within");
                tracing::error!(error = format!("{e:#}"), "edge: request failed");
                let (status, code) = if timeout { (504, "edge-timeout") } else { (500, "edge-failed") };
                let body = serde_json::json!({ "error": { "code": code, "message": format!("{e:#}") } }).to_string();
                let body = Full::new(Bytes::from(body))
                    .map_err(|never: std::convert::Infallible| match never {})
                    .boxed_unsync();
                hyper::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(body)
                    .unwrap_or_default()
            }
        }
    }
}

/// What `deskgate edge` resolved from its arguments, ready to serve.
pub struct Prepared {
    /// The loaded, linked edge.
    pub server: Arc<EdgeServer>,
    /// Where to listen.
    pub listen: std::net::SocketAddr,
    /// The adapter's id when linked, `composed` otherwise.
    pub adapter: String,
    /// Keeps the adapter runtime (and its epoch ticker) alive while a linked adapter is in use.
    _runtime: Option<crate::runtime::AdapterRuntime>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("server", &self.server)
            .field("listen", &self.listen)
            .field("adapter", &self.adapter)
            .finish_non_exhaustive()
    }
}

/// Resolve `deskgate edge`'s arguments: configuration values (file, then `--config-var`),
/// address, component, adapter.
///
/// # Errors
/// Each names the flag at fault and the fix.
pub fn prepare(args: &crate::cli::EdgeArgs) -> anyhow::Result<Prepared> {
    let mut vars = BTreeMap::new();
    if let Some(path) = &args.config_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("--config-file: cannot read {}", path.display()))?;
        let table: BTreeMap<String, toml::Value> = toml::from_str(&text)
            .with_context(|| format!("--config-file {}: not a flat TOML table of key = \"value\"", path.display()))?;
        for (k, v) in table {
            let v = match v {
                toml::Value::String(s) => s,
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Integer(i) => i.to_string(),
                other => anyhow::bail!("--config-file {}: `{k}` is a {}, expected a string", path.display(), other.type_str()),
            };
            vars.insert(k, v);
        }
    }
    for kv in &args.config_var {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--config-var {kv:?}: expected KEY=VALUE, e.g. core_url=http://127.0.0.1:8080"))?;
        vars.insert(k.trim().to_owned(), v.to_owned());
    }
    let listen: std::net::SocketAddr = args
        .listen
        .parse()
        .map_err(|e| anyhow!("--listen {:?} is not an address like 127.0.0.1:8090: {e}", args.listen))?;
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("--component: cannot read {}", args.component.display()))?;
    let clock: SharedClock = Arc::new(crate::clock::SystemClock);
    let config = EdgeConfig::new(vars, clock)?;
    let (link, adapter_name, runtime) = if args.adapter.is_empty() {
        (AdapterLink::Composed, "composed".to_owned(), None)
    } else {
        let cache = std::env::var_os("DESKGATE_CACHE_DIR").map(std::path::PathBuf::from).or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache").join("deskgate"))
        });
        let mut rt = crate::runtime::AdapterRuntime::new(crate::runtime::RuntimeConfig {
            cache_dir: cache,
            ..crate::runtime::RuntimeConfig::default()
        })?;
        let mut adapters = Vec::new();
        for a in &args.adapter {
            let adapter = if a.ends_with(".wasm") {
                let bytes = std::fs::read(a).with_context(|| format!("--adapter: cannot read {a}"))?;
                rt.load(a, &bytes).map_err(|e| anyhow!("--adapter {a}: {e}"))?
            } else {
                let (_, bytes) = crate::builtin::ADAPTERS.iter().find(|(id, _)| *id == a.as_str()).ok_or_else(|| {
                    let known: Vec<&str> = crate::builtin::ADAPTERS.iter().map(|(id, _)| *id).collect();
                    anyhow!("--adapter {a:?}: no built-in adapter by that id (built in: {}); or give a .wasm path", known.join(", "))
                })?;
                rt.load(&format!("builtin:{a}"), bytes).map_err(|e| anyhow!("--adapter {a}: {e}"))?
            };
            adapters.push(adapter);
        }
        let names: Vec<&str> = adapters.iter().map(|a| a.id()).collect();
        let name = names.join(",");
        (AdapterLink::Linked(adapters), name, Some(rt))
    };
    let server = Arc::new(
        EdgeServer::new(&bytes, link, config).with_context(|| format!("--component {}", args.component.display()))?,
    );
    Ok(Prepared { server, listen, adapter: adapter_name, _runtime: runtime })
}

/// `deskgate edge ...`: [`prepare`], then serve until ctrl-c.
///
/// Prints one JSON line once listening: `{"listening": "http://ADDR", "component", "adapter"}`.
///
/// # Errors
/// Those of [`prepare`], and an address that cannot be bound.
pub fn run(args: crate::cli::EdgeArgs) -> anyhow::Result<std::process::ExitCode> {
    let prepared = prepare(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(prepared.listen)
            .await
            .with_context(|| format!("--listen: cannot bind {}", prepared.listen))?;
        let line = serde_json::json!({
            "listening": format!("http://{}", listener.local_addr()?),
            "component": args.component.display().to_string(),
            "adapter": prepared.adapter,
        });
        println!("{line}");
        let server = prepared.server.clone();
        server
            .serve(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}
