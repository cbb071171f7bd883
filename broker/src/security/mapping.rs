//! `ssl.principal.mapping.rules` (KIP-371): how the subject of a client certificate becomes
//! the name of a `User:` principal.
//!
//! The setting is a list of rules tried in order, separated by commas or new lines. `DEFAULT`
//! takes the subject as it is (RFC 2253, e.g. `CN=alice,OU=eng,O=Example`).
//! `RULE:pattern/replacement/` applies when the regular expression `pattern` matches the whole
//! subject, and gives `replacement` with `$1`, `$2`... standing for its groups; a trailing `L`
//! or `U` (`RULE:.../.../L`) lower- or upper-cases the result. A `/` inside the pattern or the
//! replacement is written `\/`. When no rule applies, the certificate is refused.

use regex::Regex;

/// Kafka's default: the subject as it is.
pub const DEFAULT_RULES: &str = "DEFAULT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace {
        pattern: Regex,
        replacement: String,
        case: Case,
    },
}

/// Parsed `ssl.principal.mapping.rules`.
#[derive(Debug, Clone)]
pub struct PrincipalMapping {
    rules: Vec<Rule>,
    text: String,
}

impl PartialEq for PrincipalMapping {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for PrincipalMapping {}

impl Default for PrincipalMapping {
    fn default() -> Self {
        Self {
            rules: vec![Rule::Default],
            text: DEFAULT_RULES.to_string(),
        }
    }
}

/// Reads up to the next unescaped `/`: the text with the escapes of `/` resolved (other
/// escapes stay, for the regular expression or the replacement), and the rest after the `/`.
fn until_slash(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '/' => return text.get(at + 1..).map(|rest| (out, rest)),
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, escaped)) => {
                    out.push('\\');
                    out.push(escaped);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    None
}

impl PrincipalMapping {
    /// Parses the setting; an error names the rule that cannot be read.
    pub fn parse(text: &str) -> Result<PrincipalMapping, String> {
        let mut rules = Vec::new();
        let mut rest = text.trim_start();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after)
                    .ok_or_else(|| format!("`{rest}`: no `/` after the pattern"))?;
                let (replacement, after) = until_slash(after)
                    .ok_or_else(|| format!("`{rest}`: no `/` after the replacement"))?;
                let (case, after) = match after.chars().next() {
                    Some('L') => (Case::Lower, &after[1..]),
                    Some('U') => (Case::Upper, &after[1..]),
                    _ => (Case::Keep, after),
                };
                let anchored = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("`{pattern}` is not a regular expression: {e}"))?;
                rules.push(Rule::Replace {
                    pattern: anchored,
                    replacement,
                    case,
                });
                rest = after;
            } else {
                return Err(format!(
                    "`{rest}` is not a rule (DEFAULT or RULE:pattern/replacement/[LU])"
                ));
            }
            rest = rest.trim_start();
            match rest.chars().next() {
                None => {}
                Some(',' | '\n') => rest = rest[1..].trim_start(),
                Some(_) => {
                    return Err(format!(
                        "`{rest}`: rules are separated by commas or new lines"
                    ))
                }
            }
        }
        if rules.is_empty() {
            return Err("no rule (the default is DEFAULT)".to_string());
        }
        Ok(PrincipalMapping {
            rules,
            text: text.to_string(),
        })
    }

    /// The principal name for a certificate subject: the result of the first rule that
    /// applies, or an error when none does.
    pub fn apply(&self, subject: &str) -> Result<String, String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Ok(subject.to_string()),
                Rule::Replace {
                    pattern,
                    replacement,
                    case,
                } => {
                    if !pattern.is_match(subject) {
                        continue;
                    }
                    let name = pattern.replace(subject, replacement.as_str()).into_owned();
                    return Ok(match case {
                        Case::Keep => name,
                        Case::Lower => name.to_lowercase(),
                        Case::Upper => name.to_uppercase(),
                    });
                }
            }
        }
        Err(format!(
            "no rule of ssl.principal.mapping.rules ({}) applies to `{subject}`",
            self.text
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rules: &str, subject: &str) -> Result<String, String> {
        PrincipalMapping::parse(rules)?.apply(subject)
    }

    #[test]
    fn default_keeps_the_subject() {
        assert_eq!(
            map("DEFAULT", "CN=alice,OU=eng,O=Example").as_deref(),
            Ok("CN=alice,OU=eng,O=Example")
        );
        assert_eq!(
            PrincipalMapping::default().apply("CN=a").as_deref(),
            Ok("CN=a")
        );
    }

    #[test]
    fn the_first_rule_that_matches_the_whole_subject_names_the_principal() {
        let rules = "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,\n RULE:^CN=([^,]*),OU=(.*?),O=.*$/$1@$2/L, DEFAULT";
        assert_eq!(
            map(rules, "CN=kafka-broker,OU=ServiceUsers,O=Example").as_deref(),
            Ok("kafka-broker")
        );
        assert_eq!(
            map(rules, "CN=Alice,OU=ENG,O=Example").as_deref(),
            Ok("alice@eng")
        );
        // Neither RULE matches: DEFAULT takes the subject as it is.
        assert_eq!(map(rules, "CN=bob").as_deref(), Ok("CN=bob"));
        // A pattern must match the whole subject, not a part of it.
        assert_eq!(
            map("RULE:CN=([a-z]+)/$1/U", "CN=carol,O=Example").map_err(|e| e.contains("no rule")),
            Err(true)
        );
        assert_eq!(
            map("RULE:CN=([a-z]+),O=.*/$1/U", "CN=carol,O=Example").as_deref(),
            Ok("CAROL")
        );
    }

    #[test]
    fn an_escaped_slash_belongs_to_the_pattern_or_replacement() {
        assert_eq!(
            map(r"RULE:^CN=(.*)\/(.*)$/$1\/$2/", "CN=team/alice").as_deref(),
            Ok("team/alice")
        );
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule() {
        for (rules, expected) in [
            ("RULE:^CN=(.*)$", "no `/` after the pattern"),
            ("RULE:^CN=(.*)$/$1", "no `/` after the replacement"),
            ("RULE:^CN=((.*)$/$1/", "not a regular expression"),
            ("SOMETIMES", "is not a rule"),
            ("DEFAULT;DEFAULT", "separated by commas"),
            ("", "no rule"),
        ] {
            let err = PrincipalMapping::parse(rules).expect_err(rules);
            assert!(err.contains(expected), "{rules}: {err}");
        }
    }
}
