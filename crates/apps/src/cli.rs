//! The `main` every app binary shares: options, output, exit status.

use crate::args::{ArgError, Args, Common, Size};
use crate::report::AppResult;
use std::io::Write as _;
use std::process::ExitCode;

/// What an app run produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// The result line's content.
    pub result: AppResult,
    /// Human-readable lines printed before the result line (not with `--json`).
    pub lines: Vec<String>,
}

/// Usage text of the options every app takes.
pub const COMMON_USAGE: &str = "\
Common options:
  --threads N      worker threads (default: CPUs this process may run on)
  --size PRESET    small (< 0.5 s, tests), default (~2-5 s on one core), large
  --json           print only the JSON result object (no RESULT prefix, no other text)
  --help           this text

Output: human-readable lines, then a last line `RESULT {json}` with at least app, threads,
time_s (measured phase, setup excluded) and verified. Exit status: 0 verified, 1 verification
failed, 2 bad command line.";

/// Parses the command line with `configure`, runs `run`, prints, and sets the exit status.
pub fn main<C>(
    usage: &str,
    configure: impl FnOnce(&mut Args, Size) -> Result<C, ArgError>,
    run: impl FnOnce(&C, &Common) -> Report,
) -> ExitCode {
    let parsed = Args::parse(std::env::args().skip(1)).and_then(|mut args| {
        if args.flag("help")? {
            return Ok(None);
        }
        let common = Common::take(&mut args)?;
        let cfg = configure(&mut args, common.size)?;
        args.finish()?;
        Ok(Some((common, cfg)))
    });
    let (common, cfg) = match parsed {
        Ok(Some(v)) => v,
        Ok(None) => {
            println!("{usage}\n\n{COMMON_USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut report = run(&cfg, &common);
    report.result.set("size", common.size.name());
    let mut out = std::io::stdout().lock();
    let written = if common.json {
        writeln!(out, "{}", report.result.to_json())
    } else {
        report
            .lines
            .iter()
            .try_for_each(|l| writeln!(out, "{l}"))
            .and_then(|_| writeln!(out, "{}", report.result.to_line()))
    };
    if written.and_then(|_| out.flush()).is_err() {
        return ExitCode::from(2);
    }
    if report.result.verified {
        ExitCode::SUCCESS
    } else {
        eprintln!("{}: verification FAILED", report.result.app);
        ExitCode::from(1)
    }
}
