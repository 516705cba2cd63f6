//! One `deskgate serve` process for tests that need the real binary (crash recovery, replicas):
//! its own port, its config file and log in the test's directory, killed with SIGKILL on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// One `deskgate serve` process.
pub struct Serve {
    /// The name it was started under (its config and log files; `REPLICA_ID` in the config).
    pub id: String,
    /// Where it listens, on 127.0.0.1.
    pub port: u16,
    /// The process, until killed.
    pub child: Option<std::process::Child>,
}

impl Serve {
    /// Start `deskgate serve` with `config` (a `listen` line is added; `REPLICA_ID` becomes `id`),
    /// the API token `token`, a fixed credential key, logging to `dir/{id}.log`.
    pub fn start(dir: &Path, id: &str, config: &str, token: &str) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let path = dir.join(format!("{id}.toml"));
        std::fs::write(&path, format!("listen = \"127.0.0.1:{port}\"\n{config}").replace("REPLICA_ID", id)).unwrap();
        let log = std::fs::File::create(dir.join(format!("{id}.log"))).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_deskgate"))
            .args(["serve", "--config", path.to_str().unwrap()])
            .env("DESKGATE_SECRET_KEY", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
            .env("DESKGATE_API_TOKEN", token)
            .env("DESKGATE_CACHE_DIR", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-process-cache"))
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("deskgate serve");
        Serve { id: id.into(), port, child: Some(child) }
    }

    /// `path` on this process.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// kill -9: no shutdown code runs, nothing is flushed.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}
