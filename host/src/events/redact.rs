//! Masking secret values in everything a run emits: every event passes a [`Redactor`]
//! before any renderer or the journal sees it.

use base64::Engine as _;

/// What a secret is replaced with.
pub const MASK: &str = "***";
/// Shorter values are not masked: masking `ab` would shred every log line.
pub const MIN_MASKED_LEN: usize = 4;

/// Masks secret values in text.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    /// Every form of every secret, longest first so a longer match wins.
    patterns: Vec<String>,
}

impl Redactor {
    pub fn add(&mut self, secret: &str) {
        // Output reaches the log line by line: each line of a multi-line secret (a PEM key)
        // is masked on its own as well.
        if secret.contains('\n') {
            for line in secret.lines().map(|l| l.trim_end_matches('\r')) {
                self.add(line);
            }
        }
        if secret.len() < MIN_MASKED_LEN {
            return;
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let forms = [
            secret.to_string(),
            // Padded and unpadded: the padding must not survive next to the mask.
            b64.clone(),
            b64.trim_end_matches('=').to_string(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string(),
        ];
        for form in forms {
            if form.len() >= MIN_MASKED_LEN && !self.patterns.contains(&form) {
                self.patterns.push(form);
            }
        }
        self.patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
    }

    /// Length of the longest pattern.
    pub fn longest(&self) -> usize {
        self.patterns.first().map_or(0, String::len)
    }

    /// The masked text, or None when nothing needed masking.
    pub fn redact(&self, text: &str) -> Option<String> {
        if !self.patterns.iter().any(|p| text.contains(p.as_str())) {
            return None;
        }
        let mut out = text.to_string();
        for p in &self.patterns {
            out = out.replace(p.as_str(), MASK);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_raw_base64_and_url_encoded_forms() {
        let mut r = Redactor::default();
        r.add("s3cr3t/p@ss");
        let b64 = base64::engine::general_purpose::STANDARD.encode("s3cr3t/p@ss");
        let url = "s3cr3t%2Fp%40ss";
        let line = format!("raw=s3cr3t/p@ss b64={b64} url={url}");
        assert_eq!(r.redact(&line).unwrap(), "raw=*** b64=*** url=***");
        assert_eq!(r.redact("nothing here"), None);
    }

    #[test]
    fn every_line_of_a_multi_line_secret_is_masked() {
        let mut r = Redactor::default();
        r.add("-----BEGIN KEY-----\nMIIEvQIBADANBgkq\r\nhkiG9w0BAQEFAASC\n-----END KEY-----");
        assert_eq!(r.redact("line: hkiG9w0BAQEFAASC").unwrap(), "line: ***");
        assert_eq!(r.redact("MIIEvQIBADANBgkq").unwrap(), "***");
    }

    #[test]
    fn short_values_are_not_masked() {
        let mut r = Redactor::default();
        r.add("ab");
        assert_eq!(r.redact("ab cd"), None);
    }
}
