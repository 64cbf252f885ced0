//! A Milvus-protocol server for the tests: milvus-lite (`python -m milvus_lite server`) on
//! the loopback, on a free port, with a data folder of its own; waited for with a bounded
//! timeout and stopped by its process id when dropped.
//!
//! The Python that runs it is `$LOOKALIKE_MILVUS_PYTHON` (`.ci/milvus-tests` makes one with
//! milvus-lite and pymilvus from PyPI), else `python3` where it imports milvus_lite. Without
//! either the tests fail, saying how to get one: they never skip.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The Python with milvus_lite and pymilvus.
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("LOOKALIKE_MILVUS_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let imports = Command::new("python3")
        .args(["-c", "import milvus_lite, pymilvus"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if imports {
        return PathBuf::from("python3");
    }
    panic!(
        "the Milvus tests need a Python with milvus-lite and pymilvus: run `bash .ci/milvus-tests`, which makes \
         one under target/ from PyPI, or set LOOKALIKE_MILVUS_PYTHON to such a Python"
    )
}

/// A running milvus-lite server.
pub struct MilvusServer {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
}

impl MilvusServer {
    /// Starts one keeping its data under `data_dir` (made if missing; kept after a stop, so
    /// [`MilvusServer::restart`] finds the rows again).
    pub fn start(data_dir: &Path) -> Self {
        std::fs::create_dir_all(data_dir).unwrap();
        let mut server =
            Self { child: None, port: 0, data_dir: data_dir.to_path_buf(), log: data_dir.with_extension("log") };
        server.launch();
        server
    }

    fn launch(&mut self) {
        // A free port: the kernel's pick, released for the server to take.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(python())
            .args(["-m", "milvus_lite", "server", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start milvus-lite with {}: {e}", python().display()));
        self.child = Some(child);
        self.port = port;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("milvus-lite exited ({status}) before listening:\n{}", self.log_text());
            }
            if started.elapsed() > START_TIMEOUT {
                self.stop();
                panic!("milvus-lite did not listen on port {port} within {START_TIMEOUT:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (by its process id) and waits for it; its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on its data folder, on a new free port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for MilvusServer {
    fn drop(&mut self) {
        self.stop();
    }
}
