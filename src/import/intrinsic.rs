//! Resolving CloudFormation intrinsic functions where they have a plain value off AWS:
//! parameters (their `Default`, or an override), pseudo parameters, `Fn::Sub`, `Fn::Join`,
//! `Fn::Select`, `Fn::Split`, `Fn::FindInMap`, `Fn::If` and conditions. What needs a deployed
//! stack (`Fn::GetAtt`, `Ref` to a resource, `Fn::ImportValue`) is an error naming it.

use std::{cell::RefCell, collections::BTreeMap};

use serde_yaml::{Mapping, Value};

use super::template::get;

/// Values of the pseudo parameters (`AWS::Region`, ...), from the command line.
#[derive(Clone, Debug)]
pub struct Pseudo {
    pub region: String,
    pub stack_name: String,
    pub account_id: String,
}

/// What `Ref` and `Fn::Sub` can see.
pub struct Resolver<'a> {
    parameters: BTreeMap<String, Value>,
    pseudo: &'a Pseudo,
    resources: &'a Mapping,
    mappings: Option<&'a Value>,
    conditions: Option<&'a Value>,
    evaluating: RefCell<Vec<String>>,
}

/// Depth bound against self-referencing templates.
const MAX_DEPTH: usize = 32;

impl<'a> Resolver<'a> {
    /// `overrides` win over each parameter's `Default`.
    pub fn new(
        template: &'a Value,
        resources: &'a Mapping,
        pseudo: &'a Pseudo,
        overrides: &BTreeMap<String, String>,
    ) -> Self {
        let mut parameters = BTreeMap::new();
        if let Some(Value::Mapping(params)) = get(template, "Parameters") {
            for (name, param) in params {
                let Some(name) = name.as_str() else { continue };
                let list = get(param, "Type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.starts_with("List<") || t == "CommaDelimitedList");
                let value = match overrides.get(name) {
                    Some(v) => Some(Value::String(v.clone())),
                    None => get(param, "Default").cloned(),
                };
                let Some(value) = value else { continue };
                // List parameters are comma-separated strings that `Ref` returns as lists.
                let value = match (&value, list) {
                    (Value::String(s), true) => Value::Sequence(
                        s.split(',')
                            .map(|p| Value::String(p.trim().into()))
                            .collect(),
                    ),
                    _ => value,
                };
                parameters.insert(name.to_owned(), value);
            }
        }
        for (name, value) in overrides {
            parameters
                .entry(name.clone())
                .or_insert_with(|| Value::String(value.clone()));
        }
        Self {
            parameters,
            pseudo,
            resources,
            mappings: get(template, "Mappings"),
            conditions: get(template, "Conditions"),
            evaluating: RefCell::new(Vec::new()),
        }
    }

    /// The value with every intrinsic resolved. `AWS::NoValue` resolves to `Null`.
    pub fn resolve(&self, value: &Value) -> Result<Value, String> {
        self.resolve_at(value, 0)
    }

    /// A scalar as a string (numbers and booleans as YAML writes them).
    pub fn string(&self, value: &Value) -> Result<String, String> {
        scalar_string(&self.resolve(value)?)
    }

    /// An integer, from a number or a numeric string.
    pub fn integer(&self, value: &Value) -> Result<i64, String> {
        let resolved = self.resolve(value)?;
        match &resolved {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f.round() as i64))
                .ok_or_else(|| format!("{n} is not an integer")),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not an integer")),
            other => Err(format!("{} is not an integer", describe(other))),
        }
    }

    /// A number, from a number or a numeric string.
    pub fn number(&self, value: &Value) -> Result<f64, String> {
        match self.resolve(value)? {
            Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a number")),
            other => Err(format!("{} is not a number", describe(&other))),
        }
    }

    /// A boolean, from a boolean or `"true"`/`"false"`.
    pub fn boolean(&self, value: &Value) -> Result<bool, String> {
        match self.resolve(value)? {
            Value::Bool(b) => Ok(b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            other => Err(format!("{} is not a boolean", describe(&other))),
        }
    }

    /// A resource condition (`Condition: IsProd`) by name.
    pub fn condition(&self, name: &str) -> Result<bool, String> {
        if self.evaluating.borrow().iter().any(|n| n == name) {
            return Err(format!("condition {name} refers to itself"));
        }
        let expression = self
            .conditions
            .and_then(|c| get(c, name))
            .ok_or_else(|| format!("no condition named {name}"))?;
        self.evaluating.borrow_mut().push(name.to_owned());
        let result = self.resolve_at(expression, 1).and_then(|v| match v {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "condition {name} is {}, not a boolean",
                describe(&other)
            )),
        });
        self.evaluating.borrow_mut().pop();
        result
    }

    fn resolve_at(&self, value: &Value, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("intrinsic functions nested too deeply".into());
        }
        let next = depth + 1;
        match value {
            Value::Mapping(map) if super::template::is_intrinsic(value) => {
                let Some((key, arg)) = map.iter().next() else {
                    return Ok(Value::Null);
                };
                self.intrinsic(key.as_str().unwrap_or_default(), arg, next)
            }
            Value::Mapping(map) => {
                let mut out = Mapping::new();
                for (k, v) in map {
                    let v = self.resolve_at(v, next)?;
                    if !v.is_null() {
                        out.insert(k.clone(), v);
                    }
                }
                Ok(Value::Mapping(out))
            }
            Value::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let v = self.resolve_at(item, next)?;
                    if !v.is_null() {
                        out.push(v);
                    }
                }
                Ok(Value::Sequence(out))
            }
            other => Ok(other.clone()),
        }
    }

    fn intrinsic(&self, name: &str, arg: &Value, depth: usize) -> Result<Value, String> {
        let args = |n: usize| -> Result<&Vec<Value>, String> {
            match arg {
                Value::Sequence(items) if items.len() == n => Ok(items),
                _ => Err(format!("{} takes a list of {n}", short(name))),
            }
        };
        match name {
            "Ref" => self.reference(&scalar_string(arg)?),
            "Condition" => self.condition(&scalar_string(arg)?).map(Value::Bool),
            "Fn::Sub" => self.sub(arg, depth).map(Value::String),
            "Fn::Join" => {
                let a = args(2)?;
                let delimiter = scalar_string(&self.resolve_at(&a[0], depth)?)?;
                let parts = match self.resolve_at(&a[1], depth)? {
                    Value::Sequence(items) => items,
                    other => return Err(format!("!Join needs a list, not {}", describe(&other))),
                };
                let parts: Result<Vec<String>, String> = parts.iter().map(scalar_string).collect();
                Ok(Value::String(parts?.join(&delimiter)))
            }
            "Fn::Select" => {
                let a = args(2)?;
                let index = scalar_string(&self.resolve_at(&a[0], depth)?)?;
                let index: usize = index
                    .parse()
                    .map_err(|_| format!("!Select index {index:?} is not a number"))?;
                match self.resolve_at(&a[1], depth)? {
                    Value::Sequence(items) => items
                        .get(index)
                        .cloned()
                        .ok_or_else(|| format!("!Select index {index} is out of range")),
                    other => Err(format!("!Select needs a list, not {}", describe(&other))),
                }
            }
            "Fn::Split" => {
                let a = args(2)?;
                let delimiter = scalar_string(&self.resolve_at(&a[0], depth)?)?;
                let text = scalar_string(&self.resolve_at(&a[1], depth)?)?;
                Ok(Value::Sequence(
                    text.split(delimiter.as_str())
                        .map(|s| Value::String(s.into()))
                        .collect(),
                ))
            }
            "Fn::FindInMap" => {
                let a = args(3)?;
                let keys: Result<Vec<String>, String> = a
                    .iter()
                    .map(|k| scalar_string(&self.resolve_at(k, depth)?))
                    .collect();
                let keys = keys?;
                self.mappings
                    .and_then(|m| get(m, &keys[0]))
                    .and_then(|m| get(m, &keys[1]))
                    .and_then(|m| get(m, &keys[2]))
                    .map(|v| self.resolve_at(v, depth))
                    .unwrap_or_else(|| Err(format!("!FindInMap found no {}", keys.join("."))))
            }
            "Fn::If" => {
                let a = args(3)?;
                let condition = scalar_string(&a[0])?;
                let branch = if self.condition(&condition)? {
                    &a[1]
                } else {
                    &a[2]
                };
                self.resolve_at(branch, depth)
            }
            "Fn::Equals" => {
                let a = args(2)?;
                let left = self.resolve_at(&a[0], depth)?;
                let right = self.resolve_at(&a[1], depth)?;
                // Scalars compare as strings (`!Equals [!Ref Count, 1]` with Count "1").
                let same = match (scalar_string(&left), scalar_string(&right)) {
                    (Ok(l), Ok(r)) => l == r,
                    _ => left == right,
                };
                Ok(Value::Bool(same))
            }
            "Fn::Not" => {
                let a = args(1)?;
                Ok(Value::Bool(!self.truth(&a[0], depth)?))
            }
            "Fn::And" | "Fn::Or" => {
                let items = arg.as_sequence().ok_or("!And/!Or take a list")?;
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    values.push(self.truth(item, depth)?);
                }
                Ok(Value::Bool(if name == "Fn::And" {
                    values.iter().all(|b| *b)
                } else {
                    values.iter().any(|b| *b)
                }))
            }
            "Fn::GetAtt" => {
                let what = match arg {
                    Value::Sequence(parts) => parts
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("."),
                    other => scalar_string(other).unwrap_or_default(),
                };
                Err(format!("!GetAtt {what} has no value outside AWS"))
            }
            other => Err(format!("!{} has no value outside AWS", short(other))),
        }
    }

    fn truth(&self, value: &Value, depth: usize) -> Result<bool, String> {
        match self.resolve_at(value, depth)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!("{} is not a condition", describe(&other))),
        }
    }

    fn reference(&self, name: &str) -> Result<Value, String> {
        if let Some(value) = self.parameters.get(name) {
            return Ok(value.clone());
        }
        let pseudo = match name {
            "AWS::Region" => Some(self.pseudo.region.clone()),
            "AWS::StackName" => Some(self.pseudo.stack_name.clone()),
            "AWS::AccountId" => Some(self.pseudo.account_id.clone()),
            "AWS::Partition" => Some("aws".to_owned()),
            "AWS::URLSuffix" => Some("amazonaws.com".to_owned()),
            "AWS::NoValue" => return Ok(Value::Null),
            _ => None,
        };
        if let Some(value) = pseudo {
            return Ok(Value::String(value));
        }
        if self.resources.contains_key(name) {
            Err(format!(
                "!Ref {name} names a resource, which has no value outside AWS"
            ))
        } else if name.starts_with("AWS::") {
            Err(format!("!Ref {name}: pseudo parameter not known to kfaas"))
        } else {
            Err(format!(
                "!Ref {name}: no such parameter with a Default (pass --parameter {name}=VALUE)"
            ))
        }
    }

    fn sub(&self, arg: &Value, depth: usize) -> Result<String, String> {
        let (text, variables) = match arg {
            Value::Sequence(items) if items.len() == 2 => (&items[0], items[1].as_mapping()),
            other => (other, None),
        };
        let text = scalar_string(text)?;
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("!Sub {text:?} has an unclosed ${{"))?;
            let name = after[..end].trim();
            rest = &after[end + 1..];
            // `${!Literal}` writes `${Literal}`.
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
                continue;
            }
            let value = match variables.and_then(|v| v.get(name)) {
                Some(v) => self.resolve_at(v, depth)?,
                None if name.contains('.') && !name.starts_with("AWS::") => {
                    return Err(format!("!GetAtt {name} (in !Sub) has no value outside AWS"));
                }
                None => self.reference(name)?,
            };
            out.push_str(&scalar_string(&value)?);
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A scalar as a string.
pub fn scalar_string(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("{} is not a plain value", describe(other))),
    }
}

/// A short description of a value for messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(m) if super::template::is_intrinsic(value) => m
            .keys()
            .next()
            .and_then(Value::as_str)
            .map(|k| format!("!{}", short(k)))
            .unwrap_or_else(|| "a mapping".into()),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => t.tag.to_string(),
        other => scalar_string(other)
            .map(|s| format!("{s:?}"))
            .unwrap_or_default(),
    }
}

fn short(name: &str) -> &str {
    name.strip_prefix("Fn::").unwrap_or(name)
}
