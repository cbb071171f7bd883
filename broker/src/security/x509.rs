//! The principal of a TLS client certificate: the subject's distinguished name written as Kafka's
//! default `ssl.principal.mapping.rules=DEFAULT` writes it, that is Java's
//! `X500Principal.getName()` (RFC 2253 form).
//!
//! Java writes the relative distinguished names in reverse order of their encoding (the most
//! specific, usually `CN`, first), joins them with `,` and the attributes of a multi-valued one
//! with `+`. The types of RFC 2253 (`CN`, `C`, `L`, `ST`, `O`, `OU`, `STREET`, `DC`, `UID`) are
//! written by name, every other one as its dotted OID with the value as `#` and the hex of its
//! DER encoding. String values (their bytes read as UTF-8, as Java does) escape `,=+<>#;"\`
//! with a backslash, NUL as `\00`, and leading and trailing spaces (and carriage returns) with
//! a backslash.

use yasna::models::TaggedDerValue;
use yasna::tags::{
    TAG_BMPSTRING, TAG_GENERALSTRING, TAG_IA5STRING, TAG_PRINTABLESTRING, TAG_TELETEXSTRING,
    TAG_UTF8STRING,
};
use yasna::{ASN1Result, BERReader, PCBit, Tag};

/// A certificate whose subject could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the subject of the client certificate: {0}")]
pub struct X509Error(String);

/// One attribute of a distinguished name: its type and its value, DER-encoded (tag included).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attribute {
    oid: Vec<u64>,
    value: Vec<u8>,
}

/// A name: its relative distinguished names in encoding order, each with its attributes.
type Name = Vec<Vec<Attribute>>;

/// The subject of a DER certificate in RFC 2253 form, as Java's `X500Principal.getName()`.
pub fn subject_dn(certificate: &[u8]) -> Result<String, X509Error> {
    let subject = yasna::parse_ber(certificate, |reader| {
        reader.read_sequence(|certificate| {
            let subject = certificate.next().read_sequence(|tbs| {
                tbs.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
                // serialNumber, signature, issuer, validity
                for _ in 0..4 {
                    tbs.next().read_der()?;
                }
                let subject = read_name(tbs.next())?;
                // subjectPublicKeyInfo, unique identifiers, extensions
                while tbs.read_optional(|r| r.read_der())?.is_some() {}
                Ok(subject)
            })?;
            // signatureAlgorithm, signatureValue
            certificate.next().read_der()?;
            certificate.next().read_der()?;
            Ok(subject)
        })
    })
    .map_err(|e| X509Error(e.to_string()))?;
    Ok(rfc2253(&subject))
}

/// `Name ::= SEQUENCE OF SET OF SEQUENCE { type OBJECT IDENTIFIER, value ANY }`.
fn read_name(reader: BERReader<'_, '_>) -> ASN1Result<Name> {
    reader.collect_sequence_of(|rdn| {
        rdn.collect_set_of(|attribute| {
            attribute.read_sequence(|attribute| {
                let oid = attribute.next().read_oid()?.components().clone();
                let value = attribute.next().read_der()?;
                Ok(Attribute { oid, value })
            })
        })
    })
}

fn rfc2253(name: &Name) -> String {
    name.iter()
        .rev()
        .map(|rdn| {
            rdn.iter()
                .map(attribute_rfc2253)
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The RFC 2253 keyword Java writes for an attribute type, if it has one.
fn keyword(oid: &[u64]) -> Option<&'static str> {
    Some(match oid {
        [2, 5, 4, 3] => "CN",
        [2, 5, 4, 6] => "C",
        [2, 5, 4, 7] => "L",
        [2, 5, 4, 8] => "ST",
        [2, 5, 4, 9] => "STREET",
        [2, 5, 4, 10] => "O",
        [2, 5, 4, 11] => "OU",
        [0, 9, 2342, 19200300, 100, 1, 1] => "UID",
        [0, 9, 2342, 19200300, 100, 1, 25] => "DC",
        _ => return None,
    })
}

fn attribute_rfc2253(attribute: &Attribute) -> String {
    let text = keyword(&attribute.oid).and_then(|keyword| {
        let value = string_value(&attribute.value)?;
        Some(format!("{keyword}={}", escape(&value)))
    });
    text.unwrap_or_else(|| {
        let oid = attribute
            .oid
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".");
        let name = keyword(&attribute.oid).map_or(oid, str::to_string);
        let hex: String = attribute.value.iter().map(|b| format!("{b:02x}")).collect();
        format!("{name}=#{hex}")
    })
}

/// The text of a value of one of the string types Java writes as text. Java reads the bytes of
/// every one of them as UTF-8 (a BMPString's UTF-16 too, so its zero bytes become `\00`), and
/// so does Kafka's principal; this does the same.
fn string_value(der: &[u8]) -> Option<String> {
    let value: TaggedDerValue = yasna::parse_ber(der, |r| r.read_tagged_der()).ok()?;
    let string = [
        TAG_UTF8STRING,
        TAG_PRINTABLESTRING,
        TAG_IA5STRING,
        TAG_GENERALSTRING,
        TAG_TELETEXSTRING,
        TAG_BMPSTRING,
    ]
    .contains(&value.tag());
    (string && value.pcbit() == PCBit::Primitive)
        .then(|| String::from_utf8_lossy(value.value()).into_owned())
}

/// Java's RFC 2253 escaping of a string value.
fn escape(value: &str) -> String {
    const SPECIAL: &str = ",=+<>#;\"\\";
    let mut escaped: Vec<char> = Vec::with_capacity(value.len());
    for c in value.chars() {
        if SPECIAL.contains(c) {
            escaped.extend(['\\', c]);
        } else if c == '\0' {
            escaped.extend(['\\', '0', '0']);
        } else {
            escaped.push(c);
        }
    }
    let blank = |c: &char| *c == ' ' || *c == '\r';
    let lead = escaped.iter().take_while(|c| blank(c)).count();
    let trail = escaped.len() - escaped.iter().rev().take_while(|c| blank(c)).count();
    let mut out = String::with_capacity(escaped.len() + 4);
    for (i, c) in escaped.into_iter().enumerate() {
        if i < lead || i >= trail {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use yasna::models::ObjectIdentifier;

    const CN: &[u64] = &[2, 5, 4, 3];
    const OU: &[u64] = &[2, 5, 4, 11];
    const O: &[u64] = &[2, 5, 4, 10];
    const C: &[u64] = &[2, 5, 4, 6];
    const EMAIL: &[u64] = &[1, 2, 840, 113549, 1, 9, 1];

    /// The DER of a Name with these RDNs (in encoding order), values as UTF8String unless the
    /// tag says otherwise.
    fn name_der(rdns: &[&[(&[u64], Tag, &str)]]) -> Vec<u8> {
        yasna::construct_der(|w| {
            w.write_sequence_of(|w| {
                for rdn in rdns {
                    w.next().write_set_of(|w| {
                        for (oid, tag, value) in *rdn {
                            w.next().write_sequence(|w| {
                                w.next().write_oid(&ObjectIdentifier::from_slice(oid));
                                w.next()
                                    .write_tagged_der(&TaggedDerValue::from_tag_and_bytes(
                                        *tag,
                                        value.as_bytes().to_vec(),
                                    ));
                            });
                        }
                    });
                }
            });
        })
    }

    fn dn(rdns: &[&[(&[u64], Tag, &str)]]) -> String {
        let der = name_der(rdns);
        let name = yasna::parse_der(&der, read_name).unwrap();
        rfc2253(&name)
    }

    #[test]
    fn names_are_written_most_specific_first_as_java_does() {
        let u = TAG_UTF8STRING;
        let p = TAG_PRINTABLESTRING;
        assert_eq!(
            dn(&[
                &[(C, p, "US")],
                &[(O, u, "Example")],
                &[(OU, u, "eng")],
                &[(CN, u, "alice")],
            ]),
            "CN=alice,OU=eng,O=Example,C=US"
        );
        assert_eq!(dn(&[&[(CN, u, "alice")]]), "CN=alice");
        assert_eq!(dn(&[]), "");
    }

    #[test]
    fn a_multi_valued_rdn_joins_its_attributes_with_plus_in_encoding_order() {
        let u = TAG_UTF8STRING;
        // DER sorts a SET OF by encoding: the shorter OU=eng comes before CN=alice, and Java's
        // (non-canonical) RFC 2253 form keeps that order.
        assert_eq!(
            dn(&[&[(O, u, "Example")], &[(CN, u, "alice"), (OU, u, "eng")]]),
            "OU=eng+CN=alice,O=Example"
        );
    }

    #[test]
    fn special_characters_and_surrounding_spaces_are_escaped() {
        let u = TAG_UTF8STRING;
        assert_eq!(
            dn(&[&[(CN, u, r#"a,b+c"d\e<f>g;h=i#j"#)]]),
            r#"CN=a\,b\+c\"d\\e\<f\>g\;h\=i\#j"#
        );
        assert_eq!(dn(&[&[(CN, u, "  two  ")]]), r"CN=\ \ two\ \ ");
        assert_eq!(dn(&[&[(CN, u, "in side")]]), "CN=in side");
        assert_eq!(dn(&[&[(CN, u, "#lead")]]), r"CN=\#lead");
        assert_eq!(dn(&[&[(CN, u, "nul\0")]]), r"CN=nul\00");
        assert_eq!(dn(&[&[(CN, u, "ünï")]]), "CN=ünï");
    }

    #[test]
    fn types_without_a_keyword_and_non_string_values_are_hex() {
        let ia5 = TAG_IA5STRING;
        // IA5String (0x16) of length 5: "a@b.c"
        assert_eq!(
            dn(&[&[(CN, TAG_UTF8STRING, "alice")], &[(EMAIL, ia5, "a@b.c")]]),
            "1.2.840.113549.1.9.1=#16056140622e63,CN=alice"
        );
        assert_eq!(
            dn(&[&[(CN, yasna::tags::TAG_OCTETSTRING, "ab")]]),
            "CN=#04026162"
        );
    }

    #[test]
    fn string_values_are_read_as_utf8_whatever_their_type_as_java_does() {
        assert_eq!(dn(&[&[(CN, TAG_PRINTABLESTRING, "bob")]]), "CN=bob");
        assert_eq!(dn(&[&[(CN, TAG_IA5STRING, "bob")]]), "CN=bob");
        // A BMPString "ab" is the bytes 00 61 00 62.
        assert_eq!(dn(&[&[(CN, TAG_BMPSTRING, "\0a\0b")]]), r"CN=\00a\00b");
    }

    #[test]
    fn the_subject_of_a_real_certificate_is_read() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, "eng");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_dn(cert.der()).unwrap(),
            r"CN=alice,OU=eng,O=Example\, Inc."
        );
        let err = subject_dn(b"\x30\x03\x02\x01\x00").unwrap_err();
        assert!(err.to_string().contains("subject"), "{err}");
        assert!(subject_dn(&cert.der()[..20]).is_err());
    }
}
