//! Reader for Java-style `.properties` files, the format of Kafka's `server.properties`.

use std::collections::BTreeMap;

use super::ConfigError;

/// The settings of one file, and the line each was set on.
#[derive(Debug, Default)]
pub(crate) struct Properties {
    pub(crate) values: BTreeMap<String, String>,
    pub(crate) lines: BTreeMap<String, usize>,
}

/// Parses `key=value` (or `key: value`, or `key value`) lines. `#` and `!` start comment
/// lines, a trailing backslash continues a value on the next line, and a key given twice is
/// an error because it almost always hides a mistake.
pub(crate) fn parse(text: &str, origin: &str) -> Result<Properties, ConfigError> {
    let mut out = Properties::default();
    let mut lines = text.lines().enumerate();
    while let Some((index, raw)) = lines.next() {
        let line_no = index + 1;
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        let mut logical = trimmed.to_string();
        while logical.ends_with('\\') && !logical.ends_with("\\\\") {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let split = logical
            .find(['=', ':'])
            .or_else(|| logical.find(char::is_whitespace));
        let (key, value) = match split {
            Some(at) => (&logical[..at], &logical[at + 1..]),
            None => (logical.as_str(), ""),
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ConfigError::Syntax {
                origin: origin.to_string(),
                line: line_no,
                message: "a line with a value but no key".to_string(),
            });
        }
        let value = value.trim().to_string();
        out.lines.insert(key.to_string(), line_no);
        if out.values.insert(key.to_string(), value).is_some() {
            return Err(ConfigError::Syntax {
                origin: origin.to_string(),
                line: line_no,
                message: format!("`{key}` is set twice"),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_separators_and_continuations_are_understood() {
        let text = "# comment\n! also\nlisteners=PLAINTEXT://a:1\nlog.dirs : /x\nnum.partitions 3\nlong=a,\\\n  b\n";
        let parsed = parse(text, "t").expect("parses");
        assert_eq!(parsed.values["listeners"], "PLAINTEXT://a:1");
        assert_eq!(parsed.values["log.dirs"], "/x");
        assert_eq!(parsed.values["num.partitions"], "3");
        assert_eq!(parsed.values["long"], "a,b");
        assert_eq!(parsed.lines["num.partitions"], 5);
        assert_eq!(parsed.lines["long"], 6);
    }

    #[test]
    fn a_key_set_twice_is_an_error_naming_the_line() {
        let err = parse("a=1\na=2\n", "f.properties").expect_err("duplicate");
        assert!(err.to_string().contains("f.properties:2"), "{err}");
    }
}
