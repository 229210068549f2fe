//! `with:` values checked against a step's declared parameter types.

use super::diagnostic::{Diagnostic, Span};
use super::model::parse_duration;
use super::yaml::{Scalar, Yaml};
use crate::describe::{ParamType, Value};

pub fn type_name(ty: ParamType) -> &'static str {
    match ty {
        ParamType::Text => "text",
        ParamType::Boolean => "boolean",
        ParamType::Integer => "integer",
        ParamType::Duration => "duration",
        ParamType::TextList => "list of text",
        ParamType::TextMap => "map of text",
    }
}

fn example(ty: ParamType) -> &'static str {
    match ty {
        ParamType::Text => "a single value such as `hello`",
        ParamType::Boolean => "`true` or `false`",
        ParamType::Integer => "a whole number such as `3`",
        ParamType::Duration => "a duration such as `90s`, `5m` or `1h30m`",
        ParamType::TextList => "a YAML list such as `[a, b]`",
        ParamType::TextMap => "a YAML mapping such as `{ KEY: value }`",
    }
}

/// Convert a (fully interpolated) YAML value to a typed value.
pub fn convert(name: &str, value: &Yaml, ty: ParamType) -> Result<Value, Diagnostic> {
    let wrong = |span: Span, what: String| {
        Diagnostic::new(span, format!("parameter `{name}` must be {} but {what}", type_name(ty)))
            .help(format!("write {}", example(ty)))
    };
    let scalar = |v: &Yaml| -> Result<Scalar, Diagnostic> {
        match v {
            Yaml::Scalar(s) => Ok(s.clone()),
            other => Err(wrong(other.span(), format!("is {}", other.kind()))),
        }
    };
    Ok(match ty {
        ParamType::Text => Value::Text(scalar(value)?.text),
        ParamType::Boolean => {
            let s = scalar(value)?;
            match s.text.as_str() {
                "true" => Value::Boolean(true),
                "false" => Value::Boolean(false),
                other => return Err(wrong(s.span, format!("is `{other}`"))),
            }
        }
        ParamType::Integer => {
            let s = scalar(value)?;
            match s.text.trim().parse::<i64>() {
                Ok(n) => Value::Integer(n),
                Err(_) => return Err(wrong(s.span, format!("is `{}`", s.text))),
            }
        }
        ParamType::Duration => {
            let s = scalar(value)?;
            match parse_duration(&s.text) {
                Ok(d) => Value::DurationMs(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                Err(why) => return Err(wrong(s.span, why)),
            }
        }
        ParamType::TextList => match value {
            Yaml::List(items, _) => Value::TextList(
                items
                    .iter()
                    .map(|i| scalar(i).map(|s| s.text))
                    .collect::<Result<_, _>>()?,
            ),
            Yaml::Scalar(s) if s.is_null() => Value::TextList(Vec::new()),
            other => return Err(wrong(other.span(), format!("is {}", other.kind()))),
        },
        ParamType::TextMap => match value {
            Yaml::Map(entries, _) => Value::TextMap(
                entries
                    .iter()
                    .map(|(k, v)| scalar(v).map(|s| (k.text.clone(), s.text)))
                    .collect::<Result<_, _>>()?,
            ),
            Yaml::Scalar(s) if s.is_null() => Value::TextMap(Vec::new()),
            other => return Err(wrong(other.span(), format!("is {}", other.kind()))),
        },
    })
}

/// Every scalar in a YAML value, keys of mappings excluded.
pub fn scalars(value: &Yaml) -> Vec<&Scalar> {
    let mut out = Vec::new();
    fn walk<'a>(v: &'a Yaml, out: &mut Vec<&'a Scalar>) {
        match v {
            Yaml::Scalar(s) => out.push(s),
            Yaml::List(items, _) => items.iter().for_each(|i| walk(i, out)),
            Yaml::Map(entries, _) => entries.iter().for_each(|(_, v)| walk(v, out)),
        }
    }
    walk(value, &mut out);
    out
}

/// Rewrite every scalar with `f` (interpolation), keeping positions.
pub fn map_scalars<E>(value: &Yaml, f: &mut dyn FnMut(&Scalar) -> Result<String, E>) -> Result<Yaml, E> {
    Ok(match value {
        Yaml::Scalar(s) => Yaml::Scalar(Scalar {
            text: f(s)?,
            ..s.clone()
        }),
        Yaml::List(items, span) => Yaml::List(
            items.iter().map(|i| map_scalars(i, f)).collect::<Result<_, _>>()?,
            *span,
        ),
        Yaml::Map(entries, span) => Yaml::Map(
            entries
                .iter()
                .map(|(k, v)| Ok((k.clone(), map_scalars(v, f)?)))
                .collect::<Result<_, E>>()?,
            *span,
        ),
    })
}

/// Render a value for display (`wharf steps`, defaults).
pub fn display(value: &Value) -> String {
    match value {
        Value::Text(s) => s.clone(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::DurationMs(ms) => humantime::format_duration(std::time::Duration::from_millis(*ms)).to_string(),
        Value::TextList(l) => format!("[{}]", l.join(", ")),
        Value::TextMap(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Yaml {
        let Yaml::Map(m, _) = Yaml::parse(&format!("v: {text}")).unwrap() else {
            panic!()
        };
        m[0].1.clone()
    }

    #[test]
    fn converts_each_type() {
        assert_eq!(
            convert("p", &yaml("hi"), ParamType::Text).unwrap(),
            Value::Text("hi".into())
        );
        assert_eq!(
            convert("p", &yaml("3"), ParamType::Text).unwrap(),
            Value::Text("3".into())
        );
        assert_eq!(
            convert("p", &yaml("true"), ParamType::Boolean).unwrap(),
            Value::Boolean(true)
        );
        assert_eq!(
            convert("p", &yaml("-4"), ParamType::Integer).unwrap(),
            Value::Integer(-4)
        );
        assert_eq!(
            convert("p", &yaml("1m30s"), ParamType::Duration).unwrap(),
            Value::DurationMs(90_000)
        );
        assert_eq!(
            convert("p", &yaml("[a, 'b c']"), ParamType::TextList).unwrap(),
            Value::TextList(vec!["a".into(), "b c".into()])
        );
        assert_eq!(
            convert("p", &yaml("{ A: 1 }"), ParamType::TextMap).unwrap(),
            Value::TextMap(vec![("A".into(), "1".into())])
        );
    }

    #[test]
    fn wrong_types_explain_what_to_write() {
        let e = convert("replicas", &yaml("three"), ParamType::Integer).unwrap_err();
        assert_eq!(e.message, "parameter `replicas` must be integer but is `three`");
        assert_eq!(e.span, Span::new(1, 4));
        let e = convert("args", &yaml("build"), ParamType::TextList).unwrap_err();
        assert!(e.help.unwrap().contains("YAML list"));
        let e = convert("program", &yaml("[a]"), ParamType::Text).unwrap_err();
        assert!(e.message.contains("is a list"));
        assert!(
            convert("t", &yaml("10"), ParamType::Duration)
                .unwrap_err()
                .message
                .contains("no unit")
        );
    }
}
