//! Kubernetes names from CloudFormation logical IDs and SAM names.

/// A DNS-1123 label (at most 63 characters, starting with a letter, so it also suits the
/// Services and Deployments the controller names after it): `HelloWorldFunction` →
/// `hello-world-function`, `MyAPI2` → `my-api2`, `orders_v2` → `orders-v2`.
pub fn kebab(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    let mut out = String::with_capacity(id.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            // A word starts at a capital after a lower-case letter or digit, or at the last
            // capital of an acronym followed by lower case (`APIGateway` → `api-gateway`).
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('-');
            }
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.push('-');
        }
    }
    let mut collapsed = String::with_capacity(out.len());
    for c in out.chars() {
        if c == '-' && (collapsed.is_empty() || collapsed.ends_with('-')) {
            continue;
        }
        collapsed.push(c);
    }
    let mut name = collapsed.trim_end_matches('-').to_owned();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, "x-");
    }
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

/// Joins name parts with `-`, kept a valid label.
pub fn join(parts: &[&str]) -> String {
    kebab(&parts.join("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_ids_become_labels() {
        assert_eq!(kebab("HelloWorldFunction"), "hello-world-function");
        assert_eq!(kebab("APIGateway"), "api-gateway");
        assert_eq!(kebab("MyAPI2"), "my-api2");
        assert_eq!(kebab("orders_v2"), "orders-v2");
        assert_eq!(kebab("ServerlessRestApi"), "serverless-rest-api");
        assert_eq!(kebab("$default"), "default");
        assert_eq!(kebab("2fast"), "x-2fast");
        assert_eq!(
            join(&["ServerlessRestApi", "Prod"]),
            "serverless-rest-api-prod"
        );
        assert!(kebab(&"A".repeat(100)).len() <= 63);
    }
}
