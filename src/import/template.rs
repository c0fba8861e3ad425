//! Reading a SAM template: YAML or JSON, with CloudFormation's short-form tags rewritten to the
//! long form, and SAM's `Globals` merged into resources.

use serde_yaml::{Mapping, Value};

/// Parses a template (JSON is YAML too) and rewrites every `!Tag value` to `{"Fn::Tag": value}`
/// (`!Ref x` to `{"Ref": x}`), so the rest of the import handles one form only.
pub fn parse(text: &str) -> Result<Value, String> {
    let value: Value = serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    if !value.is_mapping() {
        return Err("a template is a mapping with Resources".into());
    }
    Ok(long_form(value))
}

fn long_form(value: Value) -> Value {
    match value {
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = long_form(tagged.value);
            let (key, inner) = match name {
                "Ref" | "Condition" => (name.to_owned(), inner),
                // `!GetAtt A.B` is the scalar spelling of `Fn::GetAtt: [A, B]`.
                "GetAtt" => match inner {
                    Value::String(s) => {
                        let (resource, attribute) = s.split_once('.').unwrap_or((&s, ""));
                        (
                            "Fn::GetAtt".to_owned(),
                            Value::Sequence(vec![resource.into(), attribute.into()]),
                        )
                    }
                    other => ("Fn::GetAtt".to_owned(), other),
                },
                other => (format!("Fn::{other}"), inner),
            };
            let mut map = Mapping::new();
            map.insert(Value::String(key), inner);
            Value::Mapping(map)
        }
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(long_form).collect()),
        Value::Mapping(map) => Value::Mapping(
            map.into_iter()
                .map(|(k, v)| (long_form(k), long_form(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Whether a value is an intrinsic function (`{"Ref": ..}`, `{"Fn::X": ..}`).
pub fn is_intrinsic(value: &Value) -> bool {
    match value {
        Value::Mapping(map) if map.len() == 1 => map
            .keys()
            .next()
            .and_then(Value::as_str)
            .is_some_and(|k| k == "Ref" || k == "Condition" || k.starts_with("Fn::")),
        _ => false,
    }
}

/// SAM's Globals rules: maps merge key by key, lists are concatenated (globals first), and any
/// other value of the resource replaces the global one. Intrinsics are values, not maps.
pub fn merge_globals(global: &Value, own: &Value) -> Value {
    match (global, own) {
        (Value::Mapping(g), Value::Mapping(o)) if !is_intrinsic(global) && !is_intrinsic(own) => {
            let mut out = g.clone();
            for (k, v) in o {
                let merged = match g.get(k) {
                    Some(gv) => merge_globals(gv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Mapping(out)
        }
        (Value::Sequence(g), Value::Sequence(o)) => {
            Value::Sequence(g.iter().chain(o).cloned().collect())
        }
        (_, Value::Null) => global.clone(),
        _ => own.clone(),
    }
}

/// `value[key]` for a mapping, `None` otherwise.
pub fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.as_mapping().and_then(|m| m.get(key))
}
