//! Byte counts on the command line: `64M`, `1G`, `512K`, `1.5G`, a bare number
//! is bytes. Units are binary (K = 1024), as `dd` and `fio` read them.

/// Parse a byte count for clap (`value_parser = size::parse`).
pub fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches(['B', 'b']).trim_end_matches(['i']);
    let (num, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}': expected a byte count such as 4096, 512K, 64M or 1.5G"))?;
    let v = n * (1u64 << shift) as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("'{s}': out of range"));
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_units() {
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("64M"), Ok(64 << 20));
        assert_eq!(parse("64MiB"), Ok(64 << 20));
        assert_eq!(parse("1.5G"), Ok(3 << 29));
        assert_eq!(parse("512k"), Ok(512 << 10));
        assert!(parse("fast").is_err());
        assert!(parse("-1M").is_err());
        assert!(parse("").is_err());
    }
}
