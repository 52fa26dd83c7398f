//! Real PostgreSQL and Redis for graders: a fresh database (or key space) per
//! test, never a mock.
//!
//! ```no_run
//! let db = labkit::services::postgres();   // a new, empty database
//! // connect the learner's code to db.url ...
//! let kv = labkit::services::redis();      // a Redis URL and a key prefix
//! // use kv.url, and keys starting with kv.prefix ...
//! ```
//!
//! Where the servers come from, in order:
//! 1. `DATABASE_URL` / `REDIS_URL`: that server is used. Each test gets a
//!    uniquely named database, dropped when the test ends, or a unique key
//!    prefix.
//! 2. Otherwise a throwaway server is started from the installed binaries
//!    (`initdb` + `postgres`, `redis-server`) on a free port, with its data in
//!    the temporary directory. It is shared: by the tests of one binary, by
//!    nextest's process-per-test, and by later runs. A file lock guards its
//!    start, so two processes never start two. It stops by itself after ten
//!    idle minutes (a small watcher process checks when it was last used).
//!    `initdb` and `postgres` refuse to run as root, so as root they run as
//!    the `postgres` system user (`setpriv`).
//! 3. If neither works, the test fails with one sentence on what to install
//!    or set.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::report::Report;

/// How long a throwaway server may take to start.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// A throwaway server stops after this long without a test using it.
const IDLE_STOP_SECS: u64 = 600;

/// A fresh PostgreSQL database for one test, dropped when this is dropped.
#[derive(Debug)]
pub struct TestDb {
    /// Connection URL of the new database, e.g. `postgres://postgres@127.0.0.1:41234/labkit_1234_0`.
    pub url: String,
    /// The database's name.
    pub name: String,
    admin_url: String,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort: a database left behind is harmless, and a panic in
        // drop would abort the test binary.
        let _ = admin(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        );
    }
}

/// A Redis server and a key prefix of this test's own.
#[derive(Debug, Clone)]
pub struct TestRedis {
    /// Connection URL, e.g. `redis://127.0.0.1:6379`.
    pub url: String,
    /// The address of the server.
    pub addr: SocketAddr,
    /// Every key this test uses should start with this (`labkit:<pid>:<n>:`).
    pub prefix: String,
}

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A new, empty PostgreSQL database for this test; see the module docs.
#[track_caller]
pub fn postgres() -> TestDb {
    let admin_url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => throwaway_postgres(),
    };
    let name = unique("labkit");
    if let Err(e) = admin(&admin_url, &format!("CREATE DATABASE \"{name}\"")) {
        Report::new(format!("connected to PostgreSQL at {admin_url} to create a test database"))
            .got(e)
            .hint("is the server running and may this user create databases? Set DATABASE_URL to a server where it can, or unset it to let the tests start their own")
            .fail();
    }
    let url = with_database(&admin_url, &name);
    TestDb {
        url,
        name,
        admin_url,
    }
}

/// Replaces the database name (the URL's path) in a PostgreSQL URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// Runs one statement on `url` with a short-lived connection.
fn admin(url: &str, sql: &str) -> Result<(), String> {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut conn =
            tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(url))
                .await
                .map_err(|_| "no answer within 10s".to_string())?
                .map_err(|e| e.to_string())?;
        // The statements are built by labkit from names it generated itself.
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.close().await;
        Ok(())
    })
}

/// A Redis server and a fresh key prefix for this test; see the module docs.
#[track_caller]
pub fn redis() -> TestRedis {
    let url = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => throwaway_redis(),
    };
    let hostport = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| {
            Report::new(format!("read the Redis URL {url:?}"))
                .got("no host:port in it")
                .hint("REDIS_URL looks like redis://127.0.0.1:6379")
                .fail()
        });
    TestRedis {
        url,
        addr,
        prefix: format!("{}:", unique("labkit")).replace('_', ":"),
    }
}

/// The folder that holds a throwaway server's data, lock and state.
fn state_dir(service: &str) -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("labkit-{service}-{uid}"))
}

/// Holds an exclusive `flock` on a file until dropped.
struct Lock(File);

impl Lock {
    fn take(path: &Path) -> Lock {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| {
                Report::new(format!("opened the lock file {}", path.display()))
                    .got(e)
                    .fail()
            });
        // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        Lock(file)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: unlock the descriptor we locked.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs as the `postgres` user when we are root.
fn as_db_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Finds a PostgreSQL server binary on `PATH` or in `/usr/lib/postgresql/*/bin`.
pub fn find_postgres_bin(name: &str) -> Option<PathBuf> {
    if let Some(p) = crate::strace::find_in_path(name) {
        return Some(p);
    }
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter().rev().find(|p| p.is_file())
}

/// Starts (or reuses) the shared throwaway PostgreSQL; returns its admin URL.
#[track_caller]
fn throwaway_postgres() -> String {
    let (Some(initdb), Some(postgres)) =
        (find_postgres_bin("initdb"), find_postgres_bin("postgres"))
    else {
        Report::new("looked for PostgreSQL: DATABASE_URL is not set, so the tests start their own server")
            .got("no `initdb`/`postgres` on PATH or in /usr/lib/postgresql/*/bin")
            .hint("install PostgreSQL (Debian/Ubuntu: `sudo apt-get install postgresql`) or set DATABASE_URL=postgres://user@host/db; `cargo course doctor` checks")
            .fail();
    };
    let dir = state_dir("postgres");
    let _lock = Lock::take(&dir.with_extension("lock"));
    let url_of = |port: u16| format!("postgres://postgres@127.0.0.1:{port}/postgres");
    if let Some(port) = read_port(&dir)
        && admin(&url_of(port), "SELECT 1").is_ok()
    {
        touch(&dir);
        return url_of(port);
    }
    let data = dir.join("data");
    if !data.join("PG_VERSION").is_file() {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&data).expect("create the throwaway PostgreSQL folder");
        give_to_db_user(&dir);
        let out = as_db_user(&initdb)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--no-instructions",
            ])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => Report::new(format!(
                "ran initdb for a throwaway PostgreSQL in {}",
                data.display()
            ))
            .got(format!("it failed ({})", o.status))
            .quote("initdb", &o.stderr)
            .hint("set DATABASE_URL to a running server instead")
            .fail(),
            Err(e) => Report::new("ran initdb")
                .got(e)
                .hint("set DATABASE_URL to a running server instead")
                .fail(),
        }
    }
    let port = free_port();
    let log = dir.join("postgres.log");
    let log_file = File::create(&log).expect("create the PostgreSQL log");
    give_to_db_user(&dir);
    let mut cmd = as_db_user(&postgres);
    cmd.arg("-D")
        .arg(&data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(&dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file);
    let pid = spawn_detached(cmd, "postgres");
    wait_ready("PostgreSQL", &log, || {
        admin(&url_of(port), "SELECT 1").is_ok()
    });
    fs::write(dir.join("port"), port.to_string()).expect("record the port");
    touch(&dir);
    watch_idle(&dir, pid);
    url_of(port)
}

/// Starts (or reuses) the shared throwaway Redis; returns its URL.
#[track_caller]
fn throwaway_redis() -> String {
    let Some(server) = crate::strace::find_in_path("redis-server") else {
        Report::new("looked for Redis: REDIS_URL is not set, so the tests start their own server")
            .got("no `redis-server` on PATH")
            .hint("install Redis (Debian/Ubuntu: `sudo apt-get install redis-server`) or set REDIS_URL=redis://host:6379; `cargo course doctor` checks")
            .fail();
    };
    let dir = state_dir("redis");
    fs::create_dir_all(&dir).expect("create the throwaway Redis folder");
    let _lock = Lock::take(&dir.with_extension("lock"));
    let url_of = |port: u16| format!("redis://127.0.0.1:{port}");
    if let Some(port) = read_port(&dir)
        && redis_ping(port)
    {
        touch(&dir);
        return url_of(port);
    }
    let port = free_port();
    let log = dir.join("redis.log");
    let mut cmd = Command::new(server);
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ])
    .arg("--dir")
    .arg(&dir)
    .arg("--logfile")
    .arg(&log)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let pid = spawn_detached(cmd, "redis-server");
    wait_ready("Redis", &log, || redis_ping(port));
    fs::write(dir.join("port"), port.to_string()).expect("record the port");
    touch(&dir);
    watch_idle(&dir, pid);
    url_of(port)
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn read_port(dir: &Path) -> Option<u16> {
    fs::read_to_string(dir.join("port"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Marks the server as used now (the idle watcher reads this file's age).
fn touch(dir: &Path) {
    let _ = fs::write(dir.join("last-used"), b"");
}

/// Lets the `postgres` user own the folder when we run as root.
fn give_to_db_user(dir: &Path) {
    if !is_root() {
        return;
    }
    let _ = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status();
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
}

/// Spawns a server in a session of its own, so it outlives this test process
/// and a test runner's kill of the test's process group.
fn spawn_detached(mut cmd: Command, what: &str) -> u32 {
    // SAFETY: setsid is async-signal-safe and takes no arguments.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(child) => child.id(),
        Err(e) => Report::new(format!("started a throwaway {what}"))
            .got(e)
            .fail(),
    }
}

/// Polls `ready` until the deadline: a server's start has no event to wait on.
#[track_caller]
fn wait_ready(what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > START_DEADLINE {
            Report::new(format!("started a throwaway {what}"))
                .expected(format!(
                    "it to accept connections within {START_DEADLINE:?}"
                ))
                .got("it did not")
                .quote(what, fs::read(log).unwrap_or_default())
                .fail();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a small shell loop that stops the server after it has been idle for
/// [`IDLE_STOP_SECS`], and ends when the server does.
fn watch_idle(dir: &Path, pid: u32) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 30; \
         age=$(( $(date +%s) - $(stat -c %Y \"$0/last-used\" 2>/dev/null || date +%s) )); \
         if [ \"$age\" -gt {IDLE_STOP_SECS} ]; then rm -f \"$0/port\"; kill -INT {pid}; exit 0; fi; done"
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = spawn_detached(cmd, "idle watcher");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_in_a_url() {
        assert_eq!(
            with_database("postgres://u@h:5/db", "x"),
            "postgres://u@h:5/x"
        );
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}

/// A `redis-server` of one test's own, on a free port, with no persistence:
/// a replication master for a lab to follow, which the test may stop and
/// start again on the same port. Stopped when dropped.
///
/// Unlike [`redis()`], it is never shared and never `REDIS_URL`: a test
/// that kills its master must not kill anyone else's.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    process: Option<crate::process::Process>,
}

impl RedisServer {
    /// Starts one and waits until it answers `PING`.
    #[track_caller]
    pub fn start() -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("labkit-redis-master-")
            .tempdir()
            .unwrap_or_else(|e| {
                Report::new("made a folder for a redis-server")
                    .got(e)
                    .fail()
            });
        let mut server = RedisServer {
            port: free_port(),
            dir,
            process: None,
        };
        server.launch();
        server
    }

    #[track_caller]
    fn launch(&mut self) {
        let Some(program) = crate::strace::find_in_path("redis-server") else {
            Report::new("looked for redis-server to start a replication master")
                .got("no `redis-server` on PATH")
                .hint("install Redis (Debian/Ubuntu: `sudo apt-get install redis-server`); `cargo course doctor` checks")
                .fail();
        };
        let log = self.dir.path().join("redis.log");
        let mut cmd = Command::new(program);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = match crate::process::Process::spawn(&mut cmd, |_| {}) {
            Ok((process, _pipes)) => process,
            Err(e) => Report::new("started redis-server").got(e).fail(),
        };
        self.process = Some(process);
        let port = self.port;
        wait_ready("redis-server", &log, || redis_ping(port));
    }

    /// Its address, `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its URL, `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// Kills it (SIGKILL: a crash, not a shutdown) and waits for the exit.
    pub fn stop(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill_tree();
            let _ = p.wait(Duration::from_secs(10));
        }
    }

    /// Starts it again on the same port, empty (there is no persistence):
    /// a master that crashed and came back.
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
