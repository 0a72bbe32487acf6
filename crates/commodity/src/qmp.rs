//! A small QMP (QEMU Machine Protocol) client over a Unix socket: the greeting, capability
//! negotiation, and synchronous commands. Asynchronous events that arrive in between are skipped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// Errors talking QMP.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached.
    #[error("cannot connect to QMP socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed (QEMU exited or hung up).
    #[error("QMP I/O on {path} failed")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// QEMU closed the connection.
    #[error("QEMU closed the QMP connection on {0}")]
    Closed(PathBuf),
    /// A line that is not the JSON we expect.
    #[error("unexpected QMP message on {path}: {line:?}")]
    Protocol { path: PathBuf, line: String },
    /// QEMU answered a command with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

/// A connected, negotiated QMP session.
pub struct Qmp {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// `query-status` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct VmRunState {
    /// QEMU's run state (`running`, `paused`, `shutdown`, `internal-error`...).
    pub status: String,
    /// Whether vCPUs run.
    pub running: bool,
}

/// One vCPU from `query-cpus-fast`.
#[derive(Debug, Clone, Deserialize)]
pub struct VcpuInfo {
    /// vCPU index.
    #[serde(rename = "cpu-index")]
    pub cpu_index: u32,
    /// Host thread id running the vCPU.
    #[serde(rename = "thread-id")]
    pub thread_id: i32,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path).map_err(|source| QmpError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let io = |source| QmpError::Io {
            path: path.to_path_buf(),
            source,
        };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut qmp = Self {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol {
                path: qmp.path.clone(),
                line: greeting.to_string(),
            });
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Closed(self.path.clone()));
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Protocol {
            path: self.path.clone(),
            line,
        })
    }

    /// Runs a command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut bytes = request.to_string().into_bytes();
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        loop {
            let msg = self.read_message()?;
            if msg.get("event").is_some() {
                continue;
            }
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: err["class"].as_str().unwrap_or("?").to_string(),
                    desc: err["desc"].as_str().unwrap_or("?").to_string(),
                });
            }
            return Err(QmpError::Protocol {
                path: self.path.clone(),
                line: msg.to_string(),
            });
        }
    }

    /// `query-status`.
    pub fn query_status(&mut self) -> Result<VmRunState, QmpError> {
        let v = self.execute("query-status", None)?;
        serde_json::from_value(v.clone()).map_err(|_| QmpError::Protocol {
            path: self.path.clone(),
            line: v.to_string(),
        })
    }

    /// `query-cpus-fast`: the host thread of every vCPU.
    pub fn query_vcpus(&mut self) -> Result<Vec<VcpuInfo>, QmpError> {
        let v = self.execute("query-cpus-fast", None)?;
        serde_json::from_value(v.clone()).map_err(|_| QmpError::Protocol {
            path: self.path.clone(),
            line: v.to_string(),
        })
    }

    /// `quit`: QEMU exits at once (the guest is not asked to shut down).
    pub fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None) {
            // QEMU may close the socket before or after answering.
            Ok(_) | Err(QmpError::Closed(_)) | Err(QmpError::Io { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `system_powerdown`: an ACPI power-button press the guest may honour.
    pub fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU answering a scripted conversation.
    fn fake_qemu(
        dir: &Path,
        replies: Vec<&'static str>,
    ) -> (PathBuf, std::thread::JoinHandle<Vec<String>>) {
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .unwrap();
            let mut got = Vec::new();
            for reply in replies {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                got.push(line.trim().to_string());
                w.write_all(reply.as_bytes()).unwrap();
            }
            got
        });
        (path, handle)
    }

    #[test]
    fn negotiates_and_skips_events() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, server) = fake_qemu(
            tmp.path(),
            vec![
                "{\"return\": {}}\r\n",
                "{\"event\": \"RESUME\", \"timestamp\": {}}\r\n{\"return\": {\"status\": \"running\", \"running\": true, \"singlestep\": false}}\r\n",
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\r\n",
            ],
        );
        let mut qmp = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        let st = qmp.query_status().unwrap();
        assert_eq!(st.status, "running");
        assert!(st.running);
        let err = qmp.execute("bogus", None).unwrap_err();
        assert!(
            matches!(err, QmpError::Command { ref desc, .. } if desc == "nope"),
            "{err}"
        );
        let got = server.join().unwrap();
        assert_eq!(got[0], "{\"execute\":\"qmp_capabilities\"}");
        assert_eq!(got[1], "{\"execute\":\"query-status\"}");
    }

    #[test]
    fn connect_error_names_the_socket() {
        let err = Qmp::connect(Path::new("/nonexistent/qmp.sock"), Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/qmp.sock"));
    }
}
