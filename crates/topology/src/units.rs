//! The workspace's one parser for sizes people type (`--memory 256M`, `"memory": "4GiB"`).
//!
//! A size is a whole number with an optional binary unit: `K`, `M`, `G` or `T`, each also
//! written with `B`, `i` or `iB` after it, in any case (`256M`, `256MB`, `256Mi`, `256MiB` and
//! `256mib` are all 256 * 2^20 bytes). A plain number is bytes (`B` may follow it). Spaces around
//! the number and between number and unit are ignored. Fractions, signs and other units are
//! refused with an error that says what to write instead.

/// Errors parsing a size.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    /// No leading whole number.
    #[error("{text:?} is not a size: write a whole number with an optional unit K, M, G or T (binary), e.g. 256M, 4GiB or 1048576")]
    NotANumber { text: String },
    /// A unit that is not K, M, G or T (with an optional `B`, `i` or `iB`).
    #[error("size {text:?}: unknown unit {unit:?}; use K, M, G or T (binary: 1K = 1024 bytes), e.g. 256M")]
    UnknownUnit { text: String, unit: String },
    /// More than `u64::MAX` bytes.
    #[error("size {text:?} is too large")]
    TooLarge { text: String },
    /// [`parse_size_mib`]: zero, or not a whole number of MiB.
    #[error("size {text:?} is not a whole, non-zero number of MiB; write e.g. 256M or 2G")]
    NotWholeMib { text: String },
}

/// Parses a size into bytes (see the module docs for the accepted forms).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let n: u64 = num.parse().map_err(|_| {
        let text = text.to_string();
        if num.is_empty() {
            SizeError::NotANumber { text }
        } else {
            SizeError::TooLarge { text }
        }
    })?;
    let unit = unit.trim();
    let upper = unit.to_ascii_uppercase();
    let (prefix, suffix) = upper.split_at(upper.find(['B', 'I']).unwrap_or(upper.len()));
    let shift = match (prefix, suffix) {
        ("", "" | "B") => 0,
        ("K", "" | "B" | "I" | "IB") => 10,
        ("M", "" | "B" | "I" | "IB") => 20,
        ("G", "" | "B" | "I" | "IB") => 30,
        ("T", "" | "B" | "I" | "IB") => 40,
        _ => {
            return Err(SizeError::UnknownUnit {
                text: text.to_string(),
                unit: unit.to_string(),
            })
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| SizeError::TooLarge {
            text: text.to_string(),
        })
}

/// Parses a size that must be a whole, non-zero number of MiB (e.g. a VM's memory); returns MiB.
pub fn parse_size_mib(text: &str) -> Result<u64, SizeError> {
    let bytes = parse_size(text)?;
    if bytes == 0 || bytes % (1 << 20) != 0 {
        return Err(SizeError::NotWholeMib {
            text: text.to_string(),
        });
    }
    Ok(bytes >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    #[test]
    fn accepts_what_every_former_parser_accepted() {
        // dualstack run --memory (cli/common.rs)
        for (text, want) in [
            ("512M", 512 * M),
            ("4G", 4 << 30),
            ("1048576", M),
            ("64MiB", 64 * M),
            ("64MB", 64 * M),
            ("7B", 7),
            ("2K", 2048),
            ("2KB", 2048),
            ("2KiB", 2048),
            ("1T", 1 << 40),
            ("1TiB", 1 << 40),
            (" 256M ", 256 * M),
            ("256 M", 256 * M),
            ("0", 0),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        // dualstack zone create --memory (cli/cmd_zone.rs)
        for (text, want) in [
            ("256M", 256 * M),
            ("256MiB", 256 * M),
            ("4G", 4 << 30),
            ("4096", 4096),
            ("4Gi", 4 << 30),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        // dualstack vm create --memory (commodity/util.rs), case-insensitive
        for (text, want) in [
            ("256M", 256),
            ("256MiB", 256),
            ("2G", 2048),
            ("2gb", 2048),
            ("2gib", 2048),
            ("1048576", 1),
            ("4096K", 4),
            ("4096k", 4),
        ] {
            assert_eq!(parse_size_mib(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_every_former_parser_refused() {
        for text in [
            "", "M", "4Q", "lots", "5X", "1.5G", "-1M", "+1M", "0x10", "4 G B", "4GBB",
        ] {
            assert!(parse_size(text).is_err(), "{text} was accepted");
        }
        assert!(matches!(
            parse_size("4Q"),
            Err(SizeError::UnknownUnit { unit, .. }) if unit == "Q"
        ));
        assert!(matches!(parse_size("M"), Err(SizeError::NotANumber { .. })));
        assert!(matches!(
            parse_size("99999999999T"),
            Err(SizeError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(SizeError::TooLarge { .. })
        ));
        for text in ["0M", "12", "1536K", "0"] {
            assert!(
                matches!(parse_size_mib(text), Err(SizeError::NotWholeMib { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn errors_say_what_to_write() {
        let e = parse_size("4Q").unwrap_err().to_string();
        assert!(e.contains("K, M, G or T"), "{e}");
        let e = parse_size("lots").unwrap_err().to_string();
        assert!(e.contains("e.g. 256M"), "{e}");
    }
}
