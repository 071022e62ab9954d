//! Printing keys and values, which are arbitrary bytes.

use std::fmt;

/// Shows bytes as a quoted string with non-printable bytes escaped, as in
/// `"a\x00"`, so that a violation message stays on one line and readable.
pub(crate) struct Escaped<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn escapes() {
        for (bytes, shown) in [
            (&b""[..], r#""""#),
            (b"a/b", r#""a/b""#),
            (b"\0", r#""\x00""#),
            (b"k\"\n\xff", r#""k\"\n\xff""#),
        ] {
            assert_eq!(Escaped(bytes).to_string(), shown, "{bytes:?}");
        }
    }
}
