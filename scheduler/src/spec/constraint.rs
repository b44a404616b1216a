//! Placement constraints of a job spec: attribute comparisons and `distinct_hosts`, in their
//! compact string form (human-readable formats) and their structured form.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Comparison of a constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintOp {
    /// Attribute equals the value.
    #[serde(rename = "==", alias = "=")]
    Eq,
    /// Attribute is absent or differs from the value.
    #[serde(rename = "!=")]
    Ne,
}

/// A placement constraint. In TOML/JSON either a table
/// `{ attribute = "rack", op = "=", value = "r1" }`, a compact string `"rack == r1"` /
/// `"rack != r1"`, or `"distinct_hosts"` / `{ distinct_hosts = true }`. The attribute `node`
/// matches the node name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// Compare a node attribute with a value.
    Attribute {
        /// Attribute name, e.g. `rack`.
        attribute: String,
        /// Comparison.
        op: ConstraintOp,
        /// Value to compare with.
        value: String,
    },
    /// No two tasks of the job on the same node.
    DistinctHosts,
}

impl Constraint {
    /// Whether a node with this name and these attributes satisfies the constraint
    /// (`DistinctHosts` is checked by the placer, not here, and always passes).
    #[must_use]
    pub fn matches(&self, node: &str, attributes: &BTreeMap<String, String>) -> bool {
        match self {
            Constraint::Attribute {
                attribute,
                op,
                value,
            } => {
                let actual = if attribute == "node" {
                    Some(node)
                } else {
                    attributes.get(attribute).map(String::as_str)
                };
                match op {
                    ConstraintOp::Eq => actual == Some(value.as_str()),
                    ConstraintOp::Ne => actual != Some(value.as_str()),
                }
            }
            Constraint::DistinctHosts => true,
        }
    }

    /// Parse the compact form: `attr == value`, `attr = value`, `attr != value`,
    /// `distinct_hosts`.
    pub fn parse_compact(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "distinct_hosts" {
            return Ok(Constraint::DistinctHosts);
        }
        let (attr, op, value) = if let Some((a, v)) = s.split_once("!=") {
            (a, ConstraintOp::Ne, v)
        } else if let Some((a, v)) = s.split_once("==") {
            (a, ConstraintOp::Eq, v)
        } else if let Some((a, v)) = s.split_once('=') {
            (a, ConstraintOp::Eq, v)
        } else {
            return Err(format!(
                "constraint `{s}` is not `attr == value`, `attr != value` or `distinct_hosts`"
            ));
        };
        let (attribute, value) = (attr.trim(), value.trim());
        if attribute.is_empty() || value.is_empty() {
            return Err(format!("constraint `{s}` needs an attribute and a value"));
        }
        Ok(Constraint::Attribute {
            attribute: attribute.into(),
            op,
            value: value.into(),
        })
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Attribute {
                attribute,
                op: ConstraintOp::Eq,
                value,
            } => {
                write!(f, "{attribute}={value}")
            }
            Constraint::Attribute {
                attribute,
                op: ConstraintOp::Ne,
                value,
            } => {
                write!(f, "{attribute}!={value}")
            }
            Constraint::DistinctHosts => f.write_str("distinct_hosts"),
        }
    }
}

/// Positional form used by binary formats (postcard).
#[derive(Serialize, Deserialize)]
enum ConstraintWire {
    Attribute {
        attribute: String,
        op: ConstraintOp,
        value: String,
    },
    DistinctHosts,
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return match self {
                Constraint::Attribute {
                    attribute,
                    op,
                    value,
                } => {
                    let op = if *op == ConstraintOp::Eq { "==" } else { "!=" };
                    s.collect_str(&format_args!("{attribute} {op} {value}"))
                }
                Constraint::DistinctHosts => s.serialize_str("distinct_hosts"),
            };
        }
        match self.clone() {
            Constraint::Attribute {
                attribute,
                op,
                value,
            } => ConstraintWire::Attribute {
                attribute,
                op,
                value,
            },
            Constraint::DistinctHosts => ConstraintWire::DistinctHosts,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            return d.deserialize_any(ConstraintVisitor);
        }
        Ok(match ConstraintWire::deserialize(d)? {
            ConstraintWire::Attribute {
                attribute,
                op,
                value,
            } => Constraint::Attribute {
                attribute,
                op,
                value,
            },
            ConstraintWire::DistinctHosts => Constraint::DistinctHosts,
        })
    }
}

struct ConstraintVisitor;

impl<'de> Visitor<'de> for ConstraintVisitor {
    type Value = Constraint;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a constraint: \"attr == value\", \"attr != value\", \"distinct_hosts\", \
             { attribute, op, value } or { distinct_hosts = true }",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Constraint, E> {
        Constraint::parse_compact(v).map_err(E::custom)
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Constraint, M::Error> {
        let (mut attribute, mut op, mut value, mut distinct) = (None, None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "attribute" => attribute = Some(map.next_value::<String>()?),
                "op" => op = Some(map.next_value::<ConstraintOp>()?),
                "value" => value = Some(map.next_value::<String>()?),
                "distinct_hosts" => distinct = Some(map.next_value::<bool>()?),
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["attribute", "op", "value", "distinct_hosts"],
                    ));
                }
            }
        }
        match (attribute, op, value, distinct) {
            (None, None, None, Some(true)) => Ok(Constraint::DistinctHosts),
            (Some(attribute), op, Some(value), None) => Ok(Constraint::Attribute {
                attribute,
                op: op.unwrap_or(ConstraintOp::Eq),
                value,
            }),
            _ => Err(de::Error::custom(
                "a constraint table needs `attribute` and `value` (and optionally `op`), \
                 or only `distinct_hosts = true`",
            )),
        }
    }
}
