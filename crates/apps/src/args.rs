//! A tiny `--key value` parser (the apps take no dependencies).
//!
//! Accepted forms: `--key value`, `--key=value`, and bare flags `--flag`. Every option an app
//! does not ask for is reported as an error by [`Args::finish`].

use std::fmt;
use std::str::FromStr;

/// Why the command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// A word that is not an option.
    Positional(String),
    /// An option the app does not know.
    Unknown(String),
    /// An option given more than once.
    Repeated(String),
    /// An option that needs a value was given none.
    MissingValue(String),
    /// A flag was given a value.
    FlagWithValue(String, String),
    /// The value does not parse.
    BadValue {
        key: String,
        value: String,
        expected: String,
    },
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Positional(w) => write!(
                f,
                "unexpected argument {w:?}: options are written --name value (see --help)"
            ),
            ArgError::Unknown(k) => write!(
                f,
                "unknown option --{k} (see --help for the options this app takes)"
            ),
            ArgError::Repeated(k) => write!(f, "option --{k} given more than once; give it once"),
            ArgError::MissingValue(k) => write!(f, "option --{k} needs a value: --{k} VALUE"),
            ArgError::FlagWithValue(k, v) => write!(
                f,
                "option --{k} is a flag and takes no value, but got {v:?}"
            ),
            ArgError::BadValue {
                key,
                value,
                expected,
            } => {
                write!(f, "option --{key}: {value:?} is not {expected}")
            }
        }
    }
}

impl std::error::Error for ArgError {}

#[derive(Debug)]
struct Opt {
    key: String,
    value: Option<String>,
    used: bool,
}

/// Parsed command line.
#[derive(Debug)]
pub struct Args {
    opts: Vec<Opt>,
}

impl Args {
    /// Parses the words after the program name.
    pub fn parse<I, S>(words: I) -> Result<Self, ArgError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let words: Vec<String> = words.into_iter().map(Into::into).collect();
        let mut opts: Vec<Opt> = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let w = &words[i];
            let Some(body) = w.strip_prefix("--").filter(|b| !b.is_empty()) else {
                return Err(ArgError::Positional(w.clone()));
            };
            let (key, value) = match body.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => match words.get(i + 1) {
                    Some(next) if !next.starts_with("--") => {
                        i += 1;
                        (body.to_string(), Some(next.clone()))
                    }
                    _ => (body.to_string(), None),
                },
            };
            if opts.iter().any(|o| o.key == key) {
                return Err(ArgError::Repeated(key));
            }
            opts.push(Opt {
                key,
                value,
                used: false,
            });
            i += 1;
        }
        Ok(Self { opts })
    }

    fn take(&mut self, key: &str) -> Option<&mut Opt> {
        let o = self.opts.iter_mut().find(|o| o.key == key)?;
        o.used = true;
        Some(o)
    }

    /// True when the bare flag `--key` is present.
    pub fn flag(&mut self, key: &str) -> Result<bool, ArgError> {
        match self.take(key) {
            None => Ok(false),
            Some(Opt { value: None, .. }) => Ok(true),
            Some(Opt { value: Some(v), .. }) => Err(ArgError::FlagWithValue(key.into(), v.clone())),
        }
    }

    /// The value of `--key`, parsed; `None` when absent.
    pub fn value<T: FromStr>(&mut self, key: &str, expected: &str) -> Result<Option<T>, ArgError> {
        match self.take(key) {
            None => Ok(None),
            Some(Opt { value: None, .. }) => Err(ArgError::MissingValue(key.into())),
            Some(Opt { value: Some(v), .. }) => {
                v.parse().map(Some).map_err(|_| ArgError::BadValue {
                    key: key.into(),
                    value: v.clone(),
                    expected: expected.into(),
                })
            }
        }
    }

    /// A positive integer option (`0` refused).
    pub fn positive(&mut self, key: &str) -> Result<Option<usize>, ArgError> {
        let v: Option<usize> = self.value(key, "a positive integer")?;
        match v {
            Some(0) => Err(ArgError::BadValue {
                key: key.into(),
                value: "0".into(),
                expected: "a positive integer".into(),
            }),
            v => Ok(v),
        }
    }

    /// A finite number option.
    pub fn number(&mut self, key: &str) -> Result<Option<f64>, ArgError> {
        let v: Option<f64> = self.value(key, "a number")?;
        match v {
            Some(x) if !x.is_finite() => Err(ArgError::BadValue {
                key: key.into(),
                value: x.to_string(),
                expected: "a finite number".into(),
            }),
            v => Ok(v),
        }
    }

    /// Fails on the first option nobody asked for.
    pub fn finish(self) -> Result<(), ArgError> {
        match self.opts.into_iter().find(|o| !o.used) {
            Some(o) => Err(ArgError::Unknown(o.key)),
            None => Ok(()),
        }
    }
}

/// Problem-size preset (`--size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Finishes in well under half a second: for tests.
    Small,
    /// About 2-5 s on one core of a current x86 server: for measurements.
    Default,
    /// About 4-8x the default work: for big nodes.
    Large,
}

impl Size {
    /// Name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Default => "default",
            Size::Large => "large",
        }
    }

    /// Picks the value for this preset.
    pub fn pick<T>(self, small: T, default: T, large: T) -> T {
        match self {
            Size::Small => small,
            Size::Default => default,
            Size::Large => large,
        }
    }
}

impl FromStr for Size {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "small" => Ok(Size::Small),
            "default" => Ok(Size::Default),
            "large" => Ok(Size::Large),
            _ => Err(()),
        }
    }
}

/// Options every app takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Common {
    /// `--threads N` (default: the CPUs this process may run on).
    pub threads: usize,
    /// `--json`: print only the JSON result object.
    pub json: bool,
    /// `--size small|default|large`.
    pub size: Size,
}

impl Common {
    /// Takes the common options out of `args`.
    pub fn take(args: &mut Args) -> Result<Self, ArgError> {
        let threads = match args.positive("threads")? {
            Some(t) => t,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let json = args.flag("json")?;
        let size = args
            .value("size", "one of small, default, large")?
            .unwrap_or(Size::Default);
        Ok(Self {
            threads,
            json,
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, ArgError> {
        Args::parse(s.split_whitespace())
    }

    #[test]
    fn forms_and_common_options() {
        let mut a = parse("--threads 3 --json --size=small --nx 7 --tol -1e-3").unwrap();
        let c = Common::take(&mut a).unwrap();
        assert_eq!(
            c,
            Common {
                threads: 3,
                json: true,
                size: Size::Small
            }
        );
        assert_eq!(a.positive("nx").unwrap(), Some(7));
        assert_eq!(a.number("tol").unwrap(), Some(-1e-3));
        assert_eq!(a.positive("ny").unwrap(), None);
        a.finish().unwrap();
    }

    #[test]
    fn defaults() {
        let mut a = parse("").unwrap();
        let c = Common::take(&mut a).unwrap();
        assert!(c.threads >= 1);
        assert!(!c.json);
        assert_eq!(c.size, Size::Default);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            parse("nx 3").unwrap_err(),
            ArgError::Positional("nx".into())
        );
        assert_eq!(
            parse("--nx 3 --nx 4").unwrap_err(),
            ArgError::Repeated("nx".into())
        );
        let mut a = parse("--nx").unwrap();
        assert_eq!(
            a.positive("nx").unwrap_err(),
            ArgError::MissingValue("nx".into())
        );
        let mut a = parse("--nx 0").unwrap();
        assert!(matches!(a.positive("nx"), Err(ArgError::BadValue { .. })));
        let mut a = parse("--json yes").unwrap();
        assert!(matches!(a.flag("json"), Err(ArgError::FlagWithValue(..))));
        let mut a = parse("--size huge").unwrap();
        let e = Common::take(&mut a).unwrap_err();
        assert!(
            e.to_string().contains("one of small, default, large"),
            "{e}"
        );
        let a = parse("--bogus 1").unwrap();
        assert_eq!(a.finish().unwrap_err(), ArgError::Unknown("bogus".into()));
    }
}
