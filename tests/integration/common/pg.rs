//! A PostgreSQL cluster of a test's own, for tests that restart it or stop processes attached
//! to it: the suite's shared cluster must not restart under other tests, and the log's xmin
//! horizon is cluster-wide (a stopped process's open transaction would stall every test's
//! tails).

use std::path::PathBuf;
use std::process::Stdio;

use super::free_port;

/// A PostgreSQL cluster of its own (the suite's shared one must not restart under other tests).
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

impl Postgres {
    /// Commands run as `postgres` when the tests run as root (initdb and postgres refuse root).
    fn cmd(&self, tool: &str) -> std::process::Command {
        let exe = self.bin.join(tool);
        // The effective user, read with `id -u` rather than a libc call.
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false);
        if root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        }
    }

    pub fn init() -> Option<Self> {
        let bin = std::env::var("CRONBOX_PG_BINDIR").map(PathBuf::from).ok().or_else(|| {
            let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| Some(e.ok()?.path().join("bin")))
                .filter(|b| b.join("initdb").exists())
                .collect();
            found.sort();
            found.pop()
        })?;
        let dir = std::env::temp_dir().join(format!("cronbox-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).ok()?;
        let _ = std::process::Command::new("chown")
            .args(["postgres:"])
            .arg(&dir)
            .status();
        let pg = Self {
            bin,
            data: dir.join("data"),
            port: free_port(),
        };
        let ok = pg
            .cmd("initdb")
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"])
            .arg(&pg.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?
            .success();
        ok.then_some(pg)
    }

    pub fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.data.display()
        );
        let ok = self
            .cmd("pg_ctl")
            .args(["-w", "-t", "60", "-l"])
            .arg(self.data.join("log"))
            .args(["-o", &opts, "-D"])
            .arg(&self.data)
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl start")
            .success();
        assert!(ok, "postgres did not start");
    }

    /// Like a crash: no checkpoint, clients cut off.
    pub fn stop_immediately(&self) {
        let _ = self
            .cmd("pg_ctl")
            .args(["-m", "immediate", "-w", "-D"])
            .arg(&self.data)
            .arg("stop")
            .stdout(Stdio::null())
            .status();
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_immediately();
        if let Some(dir) = self.data.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
