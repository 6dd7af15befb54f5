//! Content digests: parsed and checked before any of them becomes part of a path.

use std::fmt;

use sha2::{Digest as _, Sha256};

use super::ImageError;

/// A `sha256:` content digest: 64 lowercase hex digits, the only form stockade accepts.
///
/// A digest names blobs and store directories, so it is validated before it is used anywhere:
/// `sha256:../../x`, a wrong length, uppercase hex or another algorithm are all refused.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex digits>`.
    ///
    /// # Errors
    /// [`ImageError::Digest`] naming the value and what is wrong with it.
    pub fn parse(value: &str) -> Result<Digest, ImageError> {
        let bad = |reason: &str| ImageError::Digest { value: value.to_owned(), reason: reason.to_owned() };
        let Some((algorithm, hex)) = value.split_once(':') else {
            return Err(bad("expected <algorithm>:<hex>"));
        };
        if algorithm != "sha256" {
            return Err(bad("only sha256 digests are supported"));
        }
        if hex.len() != 64 {
            return Err(bad("a sha256 digest has 64 hex digits"));
        }
        if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad("the hex digits must be 0-9 and lowercase a-f"));
        }
        Ok(Digest { hex: hex.to_owned() })
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(data))
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> Digest {
        let sum = hasher.finalize();
        let mut hex = String::with_capacity(64);
        for byte in sum.iter() {
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
        }
        Digest { hex }
    }

    /// The 64 hex digits, safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_digests_are_refused() {
        for bad in [
            "sha256:../../x",
            "sha256:abc",
            "sha512:0000000000000000000000000000000000000000000000000000000000000000",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85/",
        ] {
            assert!(matches!(Digest::parse(bad), Err(ImageError::Digest { .. })), "{bad}");
        }
    }

    #[test]
    fn digest_of_empty_input_is_the_well_known_value() {
        let d = Digest::of(b"");
        assert_eq!(d.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    }
}
