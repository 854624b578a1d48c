//! A throwaway PostgreSQL cluster (`initdb` + `pg_ctl` in a temporary directory, on a free
//! loopback port) for tests and benchmarks of the shared store. Run as root, it runs the
//! server as the `postgres` user (PostgreSQL refuses root). Stopped when dropped.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run the server's programs as this user (when we are root).
    run_as: Option<String>,
}

/// The directory of `initdb` and `pg_ctl`: on PATH, else Debian's `/usr/lib/postgresql/N/bin`
/// (the newest).
fn server_bin() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("initdb").exists() && d.join("pg_ctl").exists() {
                return Ok(d);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|b| b.join("initdb").exists());
    versions.sort();
    versions.pop().context(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed: install Debian's \
         `postgresql` package (`apt-get install postgresql`; scripts/test.sh does)",
    )
}

/// PostgreSQL's programs with pgvector (`scripts/fetch-pgvector.sh`): the folder
/// `LECR_PGVECTOR_BIN` names, else the script's default place under `./.cache`.
pub fn pgvector_bin() -> Result<PathBuf> {
    let bin = match std::env::var_os("LECR_PGVECTOR_BIN") {
        Some(b) => PathBuf::from(b),
        None => PathBuf::from(PGVECTOR_DEFAULT_BIN),
    };
    anyhow::ensure!(
        bin.join("initdb").exists() && bin.join("pg_ctl").exists(),
        "{}: no PostgreSQL build with pgvector here; run scripts/fetch-pgvector.sh and set \
         LECR_PGVECTOR_BIN to the folder it prints",
        bin.display()
    );
    // Absolute: the programs run from the cluster's folder.
    Ok(std::fs::canonicalize(&bin)?)
}

/// Where `scripts/fetch-pgvector.sh` puts the server's programs (from the repository root).
pub const PGVECTOR_DEFAULT_BIN: &str = ".cache/pgvector-0.8.0-pg15/usr/lib/postgresql/15/bin";

impl Cluster {
    /// Initialises and starts a cluster of Debian's (or PATH's) PostgreSQL; its superuser is
    /// `lecr`, trusted on loopback.
    pub fn start() -> Result<Cluster> {
        Cluster::start_with(server_bin()?)
    }

    /// A cluster of the PostgreSQL build with pgvector ([`pgvector_bin`]).
    pub fn start_pgvector() -> Result<Cluster> {
        Cluster::start_with(pgvector_bin()?)
    }

    /// A cluster of the server programs in `bin`.
    pub fn start_with(bin: PathBuf) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("lecr-pg-").tempdir()?;
        let run_as = (unsafe { libc::geteuid() } == 0).then(|| "postgres".to_string());
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user)?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("giving {} to {user}", dir.path().display()))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let c = Cluster {
            dir,
            bin,
            port,
            run_as,
        };
        let data = c.data();
        c.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "lecr",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        )?;
        c.start_again()?;
        Ok(c)
    }

    /// The connection URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://lecr@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast: open connections are cut).
    pub fn stop(&self) -> Result<()> {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
    }

    /// Starts it again (same data, same port).
    pub fn start_again(&self) -> Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log.display().to_string(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        )
    }

    /// Turns TLS on with this certificate and key (PEM), refuses plain TCP connections (only
    /// `hostssl` in `pg_hba.conf`), and restarts.
    pub fn require_tls(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let data = PathBuf::from(self.data());
        let write = |name: &str, text: &str, mode: u32| -> Result<()> {
            let p = data.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
            if let Some(user) = &self.run_as {
                let (uid, gid) = user_ids(user)?;
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))?;
            }
            Ok(())
        };
        write("server.crt", cert_pem, 0o644)?;
        write("server.key", key_pem, 0o600)?;
        write(
            "pg_hba.conf",
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
            0o600,
        )?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
        )?;
        self.stop()?;
        self.start_again()
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let exe = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{} {}: {}\n{}",
            exe.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

/// The uid and gid of a user name.
fn user_ids(name: &str) -> Result<(u32, u32)> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    anyhow::ensure!(
        !pw.is_null(),
        "no user `{name}` to run PostgreSQL as (running as root; install Debian's postgresql, \
         which creates it)"
    );
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}
