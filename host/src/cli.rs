//! The `deskgate` command line: the operator's verbs.
//!
//! `adapters`, `adapter check`, `sim` and `serve` run here; `connect`, `probe`, `status`,
//! `alerts`, `suspend` and `resume` are clients of a running gateway's API ([`ops`]).

#[path = "cli_ops.rs"]
pub mod ops;

use crate::conformance;
use crate::runtime::{AdapterRuntime, RuntimeConfig};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// deskgate: the helpdesk integration gateway.
#[derive(Debug, Parser)]
#[command(name = "deskgate", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the loaded adapters (built-in, plus any in --dir) with their descriptors
    /// (`deskgate adapters` is `deskgate adapters list`).
    #[command(args_conflicts_with_subcommands = true)]
    Adapters {
        /// What to do with adapters (default: list).
        #[command(subcommand)]
        command: Option<AdaptersCommand>,
        /// `list`'s options, when `list` is left out.
        #[command(flatten)]
        list: AdaptersListArgs,
    },
    /// Work on one adapter component.
    Adapter {
        /// What to do with the adapter.
        #[command(subcommand)]
        command: AdapterCommand,
    },
    /// Run a local simulator of a helpdesk platform (for tests, demos and your own integration tests).
    Sim(SimArgs),
    /// Run the gateway: HTTP API, webhooks and the outbox workers, configured by deskgate.toml.
    Serve(ServeArgs),
    /// Connect a helpdesk account to a running gateway (runs the scope probe), or with --update
    /// replace a connection's credentials.
    Connect(ops::ConnectArgs),
    /// Run a connection's scope probe now and print what each capability needs.
    Probe(ops::ProbeArgs),
    /// Show connections: suspensions first, auth, queues, budgets, alerts.
    Status(ops::StatusArgs),
    /// List or acknowledge alerts.
    Alerts {
        /// What to do with alerts.
        #[command(subcommand)]
        command: ops::AlertsCommand,
    },
    /// Suspend a connection: nothing is sent for it until it is resumed (work waits durably).
    Suspend(ops::SuspendArgs),
    /// Resume a suspended connection.
    Resume(ops::ResumeArgs),
    /// Play a compressed high-volume day through three simulated helpdesks, with expired tokens,
    /// 429 storms, lost webhooks and a missing scope injected, and report what happened.
    Demo(DemoArgs),
    /// Serve the webhook edge component (components/edge) the way Spin would (see `deskgate::edge`).
    Edge(EdgeArgs),
}

/// `deskgate demo ...`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seeds the workload and every injected fault: the same seed plays the same day.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Real seconds the 24-hour day takes.
    #[arg(long, default_value_t = 120.0)]
    pub day_seconds: f64,
    /// Accounts per platform.
    #[arg(long, default_value_t = 2)]
    pub accounts: u32,
    /// New tickets per hour per account: 600 (86,400 tickets in the day), the volume at which
    /// support automation breaks; it takes about two and a half minutes on two cores
    /// (BENCHMARKS.md).
    #[arg(long, default_value_t = 600)]
    pub tickets_per_hour: u32,
    /// Print only the report.
    #[arg(long)]
    pub quiet: bool,
}

/// `deskgate edge ...`
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// The edge component (.wasm): pre-composed with its adapters, or plain with --adapter.
    #[arg(long)]
    pub component: PathBuf,
    /// Link the edge's adapter import of this adapter's id to it: a built-in id (zendesk,
    /// freshdesk, intercom) or an adapter .wasm; once per adapter import of the edge. Omit for a
    /// pre-composed edge.
    #[arg(long)]
    pub adapter: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// A configuration value (wasi:config/store), KEY=VALUE: core_url, core_token,
    /// conn_{id}_platform, conn_{id}_secret, conn_{id}_allow_unsigned. Repeatable.
    #[arg(long = "config-var")]
    pub config_var: Vec<String>,
    /// A flat TOML file of configuration values (keeps secrets off the command line);
    /// --config-var entries override it.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
}

/// `deskgate serve ...`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (see `deskgate::config` for the format).
    #[arg(long, default_value = "deskgate.toml")]
    pub config: PathBuf,
    /// Only validate the configuration (and the environment it names), then exit.
    #[arg(long)]
    pub check: bool,
}

/// `deskgate adapters ...`
#[derive(Debug, Subcommand)]
pub enum AdaptersCommand {
    /// Print each adapter: id, name, version, auth, plans and buckets, capabilities, webhooks.
    List(AdaptersListArgs),
}

/// `deskgate adapters [list] ...`
#[derive(Debug, Args)]
pub struct AdaptersListArgs {
    /// Also load every *.wasm in this directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `deskgate adapter ...`
#[derive(Debug, Subcommand)]
pub enum AdapterCommand {
    /// Check that a component meets the adapter obligations (the conformance kit).
    Check {
        /// The component (.wasm) to check.
        component: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `deskgate sim ...`
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Which platform to simulate: zendesk, freshdesk or intercom.
    #[arg(long)]
    pub platform: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Seed for fault injection, so a run can be replayed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print what the simulator holds (base URL, admin URL, account, credentials with their
    /// ready-made `Authorization` values, ticket ids) as one JSON line for scripts, instead of
    /// lines for a person.
    #[arg(long)]
    pub json: bool,
}

fn runtime() -> anyhow::Result<AdapterRuntime> {
    let cache = std::env::var_os("DESKGATE_CACHE_DIR").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("deskgate"))
    });
    let mut rt = AdapterRuntime::new(RuntimeConfig { cache_dir: cache, ..RuntimeConfig::default() })?;
    rt.load_builtin()?;
    Ok(rt)
}

/// Run the command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Adapters { command: Some(AdaptersCommand::List(args)), .. } | Command::Adapters { command: None, list: args } => {
            adapters_list(args.dir, args.json)
        }
        Command::Adapter { command: AdapterCommand::Check { component, json } } => adapter_check(component, json),
        Command::Sim(args) => sim(args),
        Command::Serve(args) => crate::serve::serve(args),
        Command::Connect(args) => ops::run(ops::Verb::Connect(Box::new(args))),
        Command::Probe(args) => ops::run(ops::Verb::Probe(args)),
        Command::Status(args) => ops::run(ops::Verb::Status(args)),
        Command::Alerts { command } => ops::run(ops::Verb::Alerts(command)),
        Command::Suspend(args) => ops::run(ops::Verb::Suspend(args)),
        Command::Resume(args) => ops::run(ops::Verb::Resume(args)),
        Command::Demo(args) => demo(args),
        Command::Edge(args) => crate::edge::run(args),
    }
}

fn adapters_list(dir: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let mut rt = runtime()?;
    let mut errors = Vec::new();
    if let Some(dir) = dir {
        errors = rt.load_dir(&dir)?;
    }
    if json {
        let list: Vec<_> = rt
            .adapters()
            .map(|a| serde_json::json!({"source": a.source(), "descriptor": a.descriptor()}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for a in rt.adapters() {
            let d = a.descriptor();
            println!("{} ({} {}) from {}", d.id, d.name, d.version, a.source());
            let auth: Vec<String> = d.auth.iter().map(|s| format!("{s:?}")).collect();
            println!("  auth:         {}", auth.join(", "));
            for p in &d.plans {
                let marker = if p.plan == d.default_plan { " (default)" } else { "" };
                let buckets: Vec<String> = p
                    .buckets
                    .iter()
                    .map(|b| format!("{} {}/{}s{}", b.name, b.limit, b.window_ms / 1000, match b.scope {
                        crate::bindings::BucketScope::Account => "",
                        crate::bindings::BucketScope::PerObject => " per object",
                    }))
                    .collect();
                println!("  plan {}{marker}: {}", p.plan, buckets.join(", "));
            }
            let idem = if d.idempotent_actions.is_empty() { "none".to_string() } else { d.idempotent_actions.join(", ") };
            println!("  idempotency:  {idem}");
            println!("  atomic resolution: {}", if d.atomic_resolution { "yes (one request)" } else { "no (parts in order)" });
            let caps: Vec<String> = d.capabilities.iter().map(|c| format!("{} via {:?}", c.capability.name(), c.method)).collect();
            println!("  capabilities: {}", caps.join(", "));
            println!("  webhooks:     {:?} in {}", d.webhook.algorithm, d.webhook.signature_header);
        }
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn adapter_check(component: PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let name = component.display().to_string();
    let report = match std::fs::read(&component) {
        Err(e) => conformance::load_failure(&name, &format!("cannot read {name}: {e}")),
        Ok(bytes) => match rt.prepare(&name, &bytes) {
            Ok(adapter) => conformance::check(&adapter),
            Err(e) => conformance::load_failure(&name, &e),
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("conformance of {} ({name})", report.adapter);
        for c in &report.checks {
            println!("  [{}] {:<24} {}", if c.passed { "ok" } else { "FAIL" }, c.obligation, c.detail);
        }
        let failed = report.failures().count();
        if failed == 0 {
            println!("all {} checks passed", report.checks.len());
        } else {
            println!("{failed} of {} checks failed", report.checks.len());
        }
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn sim(args: SimArgs) -> anyhow::Result<ExitCode> {
    let platform: deskgate_sim::Platform = args
        .platform
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--platform: {e}"))?;
    let listen: std::net::SocketAddr = args.listen.parse().map_err(|e| {
        anyhow::anyhow!("--listen {:?} is not an address like 127.0.0.1:0: {e}", args.listen)
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let (sim, info) = deskgate_sim::cli::start_demo(platform, listen, args.seed).await?;
        if args.json {
            println!("{info}");
        } else {
            print!("{}", sim_text(&info));
        }
        tokio::signal::ctrl_c().await.map_err(|e| anyhow::anyhow!("cannot wait for ctrl-c: {e}"))?;
        sim.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `deskgate sim`'s output for a person: where it listens first (one line), then the account,
/// its credentials and tickets, from the JSON `--json` prints.
fn sim_text(info: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let s = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let mut out = format!(
        "{} simulator (seed {}) listening on {}; admin API {}\n",
        s(&info["platform"]),
        info["seed"],
        s(&info["base_url"]),
        s(&info["admin_url"])
    );
    let admin = &info["admin"];
    let _ = writeln!(
        out,
        "  account {} on plan {}; admin {} <{}> (agent {})",
        info["account_id"],
        s(&info["plan"]),
        s(&admin["name"]),
        s(&admin["email"]),
        admin["id"]
    );
    for c in info["credentials"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  credential {} ({}, agent {}): Authorization: {}", c["id"], s(&c["kind"]), c["agent_id"], s(&c["authorization"]));
    }
    let tickets: Vec<String> = info["ticket_ids"].as_array().into_iter().flatten().map(ToString::to_string).collect();
    let _ = writeln!(out, "  tickets: {}", tickets.join(", "));
    out.push_str("ctrl-c stops it; --json prints all of this as one JSON line for scripts\n");
    out
}

fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if !(args.day_seconds >= 10.0) {
        eprintln!("--day-seconds {}: a day needs at least 10 real seconds (the default is 120)", args.day_seconds);
        return Ok(ExitCode::from(2));
    }
    if args.accounts == 0 || args.tickets_per_hour == 0 {
        eprintln!("--accounts and --tickets-per-hour must be at least 1");
        return Ok(ExitCode::from(2));
    }
    let opts = crate::demo::DemoOptions {
        seed: args.seed,
        day_seconds: args.day_seconds,
        accounts: args.accounts,
        tickets_per_hour: args.tickets_per_hour,
    };
    let quiet = args.quiet;
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = tokio.block_on(crate::demo::run(opts, &move |line: &str| {
        if !quiet {
            eprintln!("{line}");
        }
    }))?;
    println!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").map_err(|e| anyhow::anyhow!("--json {}: {e}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    let problems = report.problems();
    for p in &problems {
        eprintln!("demo failed: {p}");
    }
    Ok(if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
