//! The user's own programs in the isolation experiment (`--program NAME=COMMAND`,
//! `--programs FILE`): how each is started, which files it needs, how its figure of merit is
//! read and how its answer is checked.
//!
//! A program file is TOML (`[[program]]` tables) or JSON (`{"program": [...]}` or a bare array),
//! each entry a [`UserProgram`]:
//!
//! ```toml
//! [[program]]
//! name = "hpccg"
//! command = "./test_HPCCG 64 64 64"
//! files = ["/opt/hpccg/test_HPCCG"]
//! figure = 'Total: ([0-9.]+)'
//! better = "lower"
//! check = 'Final residual: [0-9.e+-]+'
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Whether a larger figure of merit is better (rates) or worse (times).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Better {
    #[default]
    Lower,
    Higher,
}

/// One user program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserProgram {
    /// Name in the tables (letters, digits, `-`, `_`; not a built-in app's).
    pub name: String,
    /// Command line, split like a shell does (quotes, no expansion); `{threads}` is the zone's
    /// core count (per rank for MPI programs), `{ranks}` the rank count.
    pub command: String,
    /// Files and directories copied into a fresh run directory before every run (the program
    /// starts there; its own path may be one of them, `./name`).
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Regex over stdout whose first capture group is the figure of merit; absent: the wall
    /// time of the process, seconds.
    #[serde(default)]
    pub figure: Option<String>,
    /// Whether a lower (default) or higher figure is better.
    #[serde(default)]
    pub better: Better,
    /// Regex that must match stdout for the answer to count as right.
    #[serde(default)]
    pub check: Option<String>,
    /// Exit status the program must end with.
    #[serde(default)]
    pub exit_status: i32,
    /// MPI launcher, e.g. `mpiexec -n {ranks}`: the run is `LAUNCHER PROGRAM` natively and
    /// `LAUNCHER dualstack run ... -- PROGRAM` (one VM per rank) in a VM configuration.
    #[serde(default)]
    pub launcher: Option<String>,
    /// MPI ranks (default 2 with a launcher, else 1).
    #[serde(default)]
    pub ranks: Option<u32>,
}

/// Problems with a program's description.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("--program {0:?}: give NAME=COMMAND, e.g. --program stencil='./stencil {{threads}}'")]
    BadArg(String),
    #[error("program name {0:?}: use letters, digits, '-' and '_' only")]
    BadName(String),
    #[error("program {0:?}: the name is taken by {1}; choose another")]
    Taken(String, &'static str),
    #[error("program {name}: {what} {text:?} is not a valid regex: {source}")]
    BadRegex {
        name: String,
        what: &'static str,
        text: String,
        #[source]
        source: regex::Error,
    },
    #[error("program {name}: the figure regex {text:?} needs one capture group around the number, e.g. 'Total: ([0-9.]+)'")]
    NoGroup { name: String, text: String },
    #[error("program {name}: {what} {text:?} cannot be split into words: {why}")]
    BadCommand {
        name: String,
        what: &'static str,
        text: String,
        why: String,
    },
    #[error("program {name}: file {path} does not exist")]
    NoFile { name: String, path: PathBuf },
    #[error("program {name}: ranks must be at least 1")]
    NoRanks { name: String },
    #[error("cannot read the program file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a program file: {why}")]
    Parse { path: PathBuf, why: String },
}

impl UserProgram {
    /// A program from `NAME=COMMAND` (wall time, exit status 0).
    pub fn from_arg(arg: &str) -> Result<Self, ProgramError> {
        let (name, command) = arg
            .split_once('=')
            .filter(|(n, c)| !n.is_empty() && !c.trim().is_empty())
            .ok_or_else(|| ProgramError::BadArg(arg.to_string()))?;
        Ok(UserProgram {
            name: name.to_string(),
            command: command.to_string(),
            files: vec![],
            figure: None,
            better: Better::Lower,
            check: None,
            exit_status: 0,
            launcher: None,
            ranks: None,
        })
    }

    /// MPI ranks of a run.
    pub fn ranks(&self) -> u32 {
        self.ranks
            .unwrap_or(if self.launcher.is_some() { 2 } else { 1 })
    }

    /// Threads per rank in a zone of `cores` cores.
    pub fn threads(&self, cores: u32) -> u32 {
        (cores / self.ranks()).max(1)
    }

    fn expand(&self, text: &str, cores: u32) -> String {
        text.replace("{threads}", &self.threads(cores).to_string())
            .replace("{ranks}", &self.ranks().to_string())
    }

    fn split(
        &self,
        what: &'static str,
        text: &str,
        cores: u32,
    ) -> Result<Vec<String>, ProgramError> {
        let bad = |why: &str| ProgramError::BadCommand {
            name: self.name.clone(),
            what,
            text: text.to_string(),
            why: why.to_string(),
        };
        let words =
            shlex::split(&self.expand(text, cores)).ok_or_else(|| bad("unbalanced quotes"))?;
        if words.is_empty() {
            return Err(bad("it is empty"));
        }
        Ok(words)
    }

    /// The program's argv with the placeholders filled in.
    pub fn argv(&self, cores: u32) -> Result<Vec<String>, ProgramError> {
        self.split("command", &self.command, cores)
    }

    /// The launcher's argv (empty without one).
    pub fn launcher_argv(&self, cores: u32) -> Result<Vec<String>, ProgramError> {
        match &self.launcher {
            Some(l) => self.split("launcher", l, cores),
            None => Ok(vec![]),
        }
    }

    fn regex(&self, what: &'static str, text: &str) -> Result<regex::Regex, ProgramError> {
        regex::Regex::new(text).map_err(|source| ProgramError::BadRegex {
            name: self.name.clone(),
            what,
            text: text.to_string(),
            source,
        })
    }

    /// Checks everything that can be checked before a run.
    pub fn validate(&self) -> Result<(), ProgramError> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ProgramError::BadName(self.name.clone()));
        }
        if super::plan::ALL_APPS.contains(&self.name.as_str())
            || super::mpi_app::is_mpi_app(&self.name)
        {
            return Err(ProgramError::Taken(self.name.clone(), "a built-in app"));
        }
        if self.ranks == Some(0) {
            return Err(ProgramError::NoRanks {
                name: self.name.clone(),
            });
        }
        self.argv(1)?;
        self.launcher_argv(1)?;
        if let Some(f) = &self.figure {
            let re = self.regex("figure", f)?;
            if re.captures_len() < 2 {
                return Err(ProgramError::NoGroup {
                    name: self.name.clone(),
                    text: f.clone(),
                });
            }
        }
        if let Some(c) = &self.check {
            self.regex("check", c)?;
        }
        for f in &self.files {
            if !f.exists() {
                return Err(ProgramError::NoFile {
                    name: self.name.clone(),
                    path: f.clone(),
                });
            }
        }
        Ok(())
    }

    /// Reads the figure of merit from a run's output; `wall_s` when there is no regex.
    /// `Err` says why it could not be read.
    pub fn read_figure(&self, stdout: &str, wall_s: f64) -> Result<f64, String> {
        let Some(f) = &self.figure else {
            return Ok(wall_s);
        };
        let re = self.regex("figure", f).map_err(|e| e.to_string())?;
        let caps = re
            .captures_iter(stdout)
            .last()
            .ok_or_else(|| format!("the figure regex {f:?} does not match the output"))?;
        let text = caps.get(1).map_or("", |m| m.as_str());
        text.trim()
            .parse::<f64>()
            .map_err(|_| format!("the figure regex {f:?} captured {text:?}, not a number"))
    }

    /// Whether the answer is right: exit status and check regex. `Err` says what is wrong.
    pub fn check(&self, stdout: &str, status: i32) -> Result<(), String> {
        if status != self.exit_status {
            return Err(format!(
                "exit status {status}, expected {}",
                self.exit_status
            ));
        }
        if let Some(c) = &self.check {
            let re = self.regex("check", c).map_err(|e| e.to_string())?;
            if !re.is_match(stdout) {
                return Err(format!("the check regex {c:?} does not match the output"));
            }
        }
        Ok(())
    }

    /// The value every table uses: lower is better, so a higher-is-better figure enters as
    /// its reciprocal.
    pub fn cost(&self, figure: f64) -> f64 {
        match self.better {
            Better::Lower => figure,
            Better::Higher if figure > 0.0 => 1.0 / figure,
            Better::Higher => f64::INFINITY,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ProgramFile {
    Table {
        #[serde(alias = "programs")]
        program: Vec<UserProgram>,
    },
    List(Vec<UserProgram>),
}

/// Reads a TOML (`.toml`) or JSON (anything else) program file. Relative `files` are taken
/// relative to the file's directory.
pub fn load_file(path: &Path) -> Result<Vec<UserProgram>, ProgramError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProgramError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_err = |why: String| ProgramError::Parse {
        path: path.to_path_buf(),
        why,
    };
    let parsed: ProgramFile = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).map_err(|e| parse_err(e.to_string()))?
    } else {
        serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))?
    };
    let mut list = match parsed {
        ProgramFile::Table { program } => program,
        ProgramFile::List(l) => l,
    };
    let base = path.parent().unwrap_or(Path::new("."));
    for p in &mut list {
        for f in &mut p.files {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
    }
    Ok(list)
}

/// Copies `files` into `dir` (created): files by name, directories recursively.
pub fn stage(files: &[PathBuf], dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for f in files {
        let name = f.file_name().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} has no file name", f.display()),
            )
        })?;
        copy_tree(f, &dir.join(name))?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog() -> UserProgram {
        let mut p = UserProgram::from_arg("stencil=./stencil -t {threads} -r {ranks}").unwrap();
        p.figure = Some(r"time: ([0-9.]+) s".into());
        p.check = Some("residual ok".into());
        p
    }

    #[test]
    fn argv_placeholders_figure_and_check() {
        let p = prog();
        p.validate().unwrap();
        assert_eq!(p.argv(4).unwrap(), ["./stencil", "-t", "4", "-r", "1"]);
        let out = "step 1\ntime: 1.5 s\ntime: 2.25 s\nresidual ok\n";
        assert_eq!(p.read_figure(out, 9.0).unwrap(), 2.25);
        assert!(p.check(out, 0).is_ok());
        assert!(p
            .check("residual bad", 0)
            .unwrap_err()
            .contains("check regex"));
        assert!(p.check(out, 3).unwrap_err().contains("exit status 3"));
        assert!(p
            .read_figure("nothing", 1.0)
            .unwrap_err()
            .contains("does not match"));
        let mut mpi = p.clone();
        mpi.launcher = Some("mpiexec -n {ranks}".into());
        assert_eq!(mpi.launcher_argv(2).unwrap(), ["mpiexec", "-n", "2"]);
        assert_eq!(mpi.threads(2), 1);
        let mut h = p.clone();
        h.better = Better::Higher;
        assert_eq!(h.cost(4.0), 0.25);
    }

    #[test]
    fn bad_descriptions_are_refused_with_the_reason() {
        assert!(matches!(
            UserProgram::from_arg("nocommand"),
            Err(ProgramError::BadArg(_))
        ));
        let mut p = prog();
        p.figure = Some("time: [0-9.]+".into());
        assert!(matches!(p.validate(), Err(ProgramError::NoGroup { .. })));
        p.figure = Some("time: ([0-9.]+".into());
        assert!(matches!(p.validate(), Err(ProgramError::BadRegex { .. })));
        let mut p = prog();
        p.name = "hpccg".into();
        assert!(matches!(p.validate(), Err(ProgramError::Taken(..))));
        let mut p = prog();
        p.command = "./x 'unclosed".into();
        assert!(matches!(p.validate(), Err(ProgramError::BadCommand { .. })));
        let mut p = prog();
        p.files = vec!["/nonexistent/dualstack-file".into()];
        assert!(matches!(p.validate(), Err(ProgramError::NoFile { .. })));
    }

    #[test]
    fn toml_and_json_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.bin"), b"x").unwrap();
        let t = dir.path().join("p.toml");
        std::fs::write(
            &t,
            "[[program]]\nname = \"a\"\ncommand = \"./a.bin\"\nfiles = [\"a.bin\"]\nbetter = \"higher\"\nfigure = 'rate ([0-9.]+)'\n\n[[program]]\nname = \"b\"\ncommand = \"./b\"\nlauncher = \"mpiexec -n {ranks}\"\n",
        )
        .unwrap();
        let l = load_file(&t).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].files, [dir.path().join("a.bin")]);
        assert_eq!(l[0].better, Better::Higher);
        assert_eq!(l[1].ranks(), 2);
        let j = dir.path().join("p.json");
        std::fs::write(&j, r#"[{"name": "c", "command": "./c", "exit_status": 3}]"#).unwrap();
        assert_eq!(load_file(&j).unwrap()[0].exit_status, 3);
        std::fs::write(&j, r#"[{"name": "c", "comand": "./c"}]"#).unwrap();
        assert!(matches!(load_file(&j), Err(ProgramError::Parse { .. })));
        let run = dir.path().join("run");
        stage(&l[0].files, &run).unwrap();
        assert!(run.join("a.bin").is_file());
    }
}
