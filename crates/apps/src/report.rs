//! The `RESULT {...}` line every app prints last, and a parser for it.
//!
//! The apps are dependency-free, so this holds a tiny JSON model: enough to write a flat result
//! object and to read back any JSON value the line contains.

use std::fmt::{self, Write as _};

/// Prefix of the result line.
pub const RESULT_PREFIX: &str = "RESULT ";

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null` (also how non-finite numbers are written).
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// Any number.
    Num(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in the order written.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(v) => Some(*v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl From<f64> for Json {
    fn from(v: f64) -> Self {
        Json::Num(v)
    }
}
impl From<usize> for Json {
    fn from(v: usize) -> Self {
        Json::Num(v as f64)
    }
}
impl From<u64> for Json {
    fn from(v: u64) -> Self {
        Json::Num(v as f64)
    }
}
impl From<bool> for Json {
    fn from(v: bool) -> Self {
        Json::Bool(v)
    }
}
impl From<&str> for Json {
    fn from(v: &str) -> Self {
        Json::Str(v.to_string())
    }
}
impl From<String> for Json {
    fn from(v: String) -> Self {
        Json::Str(v)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num(v) if !v.is_finite() => f.write_str("null"),
            Json::Num(v) if v.fract() == 0.0 && v.abs() < 1e15 => write!(f, "{}", *v as i64),
            // Both forms are the shortest representation that round-trips, and valid JSON;
            // plain `{}` would spell 1e-300 with 300 zeros.
            Json::Num(v) if (1e-4..1e15).contains(&v.abs()) => write!(f, "{v}"),
            Json::Num(v) => write!(f, "{v:e}"),
            Json::Str(s) => write_str(f, s),
            Json::Arr(a) => {
                f.write_char('[')?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_char(']')
            }
            Json::Obj(m) => {
                f.write_char('{')?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write_str(f, k)?;
                    write!(f, ":{v}")?;
                }
                f.write_char('}')
            }
        }
    }
}

fn write_str(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// One app run's result: the fields every app prints, plus app-specific ones.
#[derive(Debug, Clone, PartialEq)]
pub struct AppResult {
    /// App name (`hpccg`, `minife`, `minimd`, `amg`, `phdmesh`, `stream`, `fwq`).
    pub app: String,
    /// Threads used.
    pub threads: usize,
    /// Runtime of the measured phase in seconds (setup excluded).
    pub time_s: f64,
    /// Whether the app's own check of its answer passed.
    pub verified: bool,
    /// Every other field, in the order printed.
    pub extra: Vec<(String, Json)>,
}

impl AppResult {
    /// A result with no extra fields yet.
    pub fn new(app: &str, threads: usize, time_s: f64, verified: bool) -> Self {
        Self {
            app: app.to_string(),
            threads,
            time_s,
            verified,
            extra: Vec::new(),
        }
    }

    /// Adds (or replaces) an extra field.
    pub fn with(mut self, key: &str, v: impl Into<Json>) -> Self {
        self.set(key, v);
        self
    }

    /// Adds (or replaces) an extra field.
    pub fn set(&mut self, key: &str, v: impl Into<Json>) {
        let v = v.into();
        match self.extra.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => self.extra.push((key.to_string(), v)),
        }
    }

    /// An extra field.
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.extra.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The result as one JSON object.
    pub fn to_json(&self) -> Json {
        let mut m = vec![
            ("app".to_string(), Json::from(self.app.as_str())),
            ("threads".to_string(), Json::from(self.threads)),
            ("time_s".to_string(), Json::from(self.time_s)),
            ("verified".to_string(), Json::from(self.verified)),
        ];
        m.extend(self.extra.iter().cloned());
        Json::Obj(m)
    }

    /// The harness line: `RESULT {...}`.
    pub fn to_line(&self) -> String {
        format!("{RESULT_PREFIX}{}", self.to_json())
    }
}

/// Parses a result line: `RESULT {...}` as the apps print last, or the bare JSON object that
/// `--json` prints. Surrounding whitespace is ignored. `None` when the line is neither, or when
/// `app`, `threads`, `time_s` or `verified` is missing or of the wrong type.
pub fn parse_result_line(line: &str) -> Option<AppResult> {
    let line = line.trim();
    let body = line
        .strip_prefix(RESULT_PREFIX)
        .unwrap_or(line)
        .trim_start();
    let Json::Obj(members) = parse_json(body)? else {
        return None;
    };
    let mut app = None;
    let mut threads = None;
    let mut time_s = None;
    let mut verified = None;
    let mut extra = Vec::new();
    for (k, v) in members {
        match (k.as_str(), &v) {
            ("app", Json::Str(s)) => app = Some(s.clone()),
            ("threads", Json::Num(n)) if *n >= 0.0 && n.fract() == 0.0 => {
                threads = Some(*n as usize)
            }
            ("time_s", Json::Num(t)) => time_s = Some(*t),
            ("verified", Json::Bool(b)) => verified = Some(*b),
            ("app" | "threads" | "time_s" | "verified", _) => return None,
            _ => extra.push((k, v)),
        }
    }
    Some(AppResult {
        app: app?,
        threads: threads?,
        time_s: time_s?,
        verified: verified?,
        extra,
    })
}

/// Parses one complete JSON value (nothing but whitespace may follow it).
pub fn parse_json(text: &str) -> Option<Json> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

/// Nesting limit, so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.i += 1)
    }

    fn lit(&mut self, word: &str, v: Json) -> Option<Json> {
        self.s[self.i..].starts_with(word.as_bytes()).then(|| {
            self.i += word.len();
            v
        })
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match self.peek()? {
            b'n' => self.lit("null", Json::Null),
            b't' => self.lit("true", Json::Bool(true)),
            b'f' => self.lit("false", Json::Bool(false)),
            b'"' => self.string().map(Json::Str),
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(Json::Arr(a));
                }
                loop {
                    a.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(Json::Arr(a));
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.eat(b'}').is_some() {
                    return Some(Json::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    let v = self.value(depth + 1)?;
                    m.push((k, v));
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(Json::Obj(m));
                        }
                        _ => return None,
                    }
                }
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn number(&mut self) -> Option<Json> {
        let start = self.i;
        while self.i < self.s.len()
            && matches!(
                self.s[self.i],
                b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
            )
        {
            self.i += 1;
        }
        let t = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        // Rust's float grammar is a superset of JSON's number grammar except for these.
        if t.starts_with('+') || t.starts_with('.') || t.ends_with('.') {
            return None;
        }
        t.parse::<f64>().ok().map(Json::Num)
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        self.i += 4;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                self.eat(b'\\')?;
                                self.eat(b'u')?;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return None;
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(code)?
                        }
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b if b < 0x20 => return None,
                b => out.push(b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_round_trips() {
        let r = AppResult::new("hpccg", 2, 1.234, true)
            .with("iterations", 150usize)
            .with("residual", 3.5e-12)
            .with("note", "a \"quoted\"\n\u{1}é")
            .with("nan", f64::NAN);
        let line = r.to_line();
        assert!(line.starts_with(
            "RESULT {\"app\":\"hpccg\",\"threads\":2,\"time_s\":1.234,\"verified\":true"
        ));
        let back = parse_result_line(&line).expect("parses");
        assert_eq!(back.app, "hpccg");
        assert_eq!(back.threads, 2);
        assert_eq!(back.time_s, 1.234);
        assert!(back.verified);
        assert_eq!(back.get("iterations"), Some(&Json::Num(150.0)));
        assert_eq!(back.get("residual").and_then(Json::as_f64), Some(3.5e-12));
        assert_eq!(
            back.get("note").and_then(Json::as_str),
            Some("a \"quoted\"\n\u{1}é")
        );
        assert_eq!(back.get("nan"), Some(&Json::Null));
        // The bare object (`--json`) parses too.
        assert_eq!(
            parse_result_line(&r.to_json().to_string()).map(|r| r.threads),
            Some(2)
        );
    }

    #[test]
    fn foreign_json_parses() {
        let line = r#"  RESULT { "app" : "x", "threads": 1, "time_s": 0.5, "verified": false,
            "a": [1, -2.5E-3, {"b": null}, "\u00e9\ud83d\ude00"], "c": {} } "#;
        let r = parse_result_line(line).expect("parses");
        assert!(!r.verified);
        let Some(Json::Arr(a)) = r.get("a") else {
            panic!("array")
        };
        assert_eq!(a[1], Json::Num(-2.5e-3));
        assert_eq!(a[3], Json::Str("é😀".into()));
    }

    #[test]
    fn malformed_lines_are_rejected() {
        for bad in [
            "",
            "RESULT",
            "RESULT {",
            "hello",
            "RESULT []",
            r#"RESULT {"app":"x","threads":1,"time_s":1}"#,
            r#"RESULT {"app":"x","threads":1.5,"time_s":1,"verified":true}"#,
            r#"RESULT {"app":"x","threads":1,"time_s":"1","verified":true}"#,
            r#"RESULT {"app":"x","threads":1,"time_s":1,"verified":true} trailing"#,
            r#"RESULT {"app":"x","threads":1,"time_s":.5,"verified":true}"#,
            r#"RESULT {"app":"x","threads":1,"time_s":1,"verified":true,"s":"\q"}"#,
        ] {
            assert!(parse_result_line(bad).is_none(), "accepted {bad:?}");
        }
        let deep = "[".repeat(10_000);
        assert!(parse_json(&deep).is_none());
    }
}
