//! Which of this machine's environment variables a local function instance gets.
//!
//! Lambda gives a function a defined environment: its own variables, the runtime's reserved
//! ones, credentials and little else. `sam local` does the same through its container. An
//! instance that inherited the developer's whole shell would behave differently here than when
//! deployed, would see every secret the shell holds, and would pay for whatever the shell
//! configures: `NODE_EXTRA_CA_CERTS`, for one, makes Node.js read and parse a CA bundle before
//! any code runs (42 ms of a 70 ms start on the benchmark machine; AWS stopped setting it by
//! default in its Node.js 20 runtime for that reason). So an instance gets the variables needed
//! to run a process on this machine, the AWS SDK's credentials and settings (as `sam local`
//! passes them, so SDK calls work), the proxy settings, and what `--pass-env` names.

use std::ffi::{OsStr, OsString};

/// Passed by default: exact names, or prefixes ending in `*`.
pub const PASSED_BY_DEFAULT: &[&str] = &[
    // Running a process at all: finding programs, a home, a user, a locale, a temp folder.
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TMPDIR",
    // The AWS SDKs: credentials, profile, region and endpoints (a Function's `environment`
    // and the Lambda variables are set after these, so they win).
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL*",
    // Reaching the network from where the developer is.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The host variables instances get, taken once when `kfaas local` starts.
#[derive(Debug, Clone, Default)]
pub struct HostEnv {
    /// For every instance's processes.
    pub passed: Vec<(OsString, OsString)>,
}

impl HostEnv {
    /// From this process's environment, with `extra` (checked by [`check_pass_env`]) passed too.
    pub fn from_process(extra: &[String]) -> Self {
        Self {
            passed: passed_host_env(std::env::vars_os(), extra),
        }
    }
}

/// A `--pass-env` entry that cannot name a variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "--pass-env {0:?}: not a variable name (letters, digits and `_`, optionally ending in `*` \
     to pass every variable that starts with what comes before it)"
)]
pub struct BadPassEnv(pub String);

/// Checks the names given to `--pass-env`.
pub fn check_pass_env(names: &[String]) -> Result<(), BadPassEnv> {
    for name in names {
        let stem = name.strip_suffix('*').unwrap_or(name);
        let valid = stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && (!stem.is_empty() || name == "*");
        if !valid {
            return Err(BadPassEnv(name.clone()));
        }
    }
    Ok(())
}

/// The host variables an instance gets: those of `host` that the default list or `extra`
/// (names or `PREFIX*` patterns; `*` alone passes everything) name, minus kfaas's own
/// `KFAAS_*`, in `host`'s order.
pub fn passed_host_env(
    host: impl IntoIterator<Item = (OsString, OsString)>,
    extra: &[String],
) -> Vec<(OsString, OsString)> {
    host.into_iter()
        .filter(|(name, _)| {
            !is_kfaas_own(name)
                && (PASSED_BY_DEFAULT.iter().any(|p| matches(p, name))
                    || extra.iter().any(|p| matches(p, name)))
        })
        .collect()
}

fn is_kfaas_own(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b"KFAAS_")
}

/// Whether `pattern` (a name, or a prefix ending in `*`) names `name`.
fn matches(pattern: &str, name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix.as_bytes()),
        None => name == pattern.as_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(names: &[&str]) -> Vec<(OsString, OsString)> {
        names
            .iter()
            .map(|n| (OsString::from(n), OsString::from(format!("value of {n}"))))
            .collect()
    }

    fn names(vars: &[(OsString, OsString)]) -> Vec<String> {
        vars.iter()
            .map(|(n, _)| n.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn passes_what_a_process_needs_and_the_aws_settings_and_nothing_else() {
        let vars = host(&[
            "PATH",
            "HOME",
            "NODE_EXTRA_CA_CERTS",
            "LC_ALL",
            "GITHUB_TOKEN",
            "AWS_PROFILE",
            "AWS_ENDPOINT_URL_S3",
            "PYTHONPATH",
            "https_proxy",
            "KFAAS_PORT",
        ]);
        let passed = passed_host_env(vars, &[]);
        assert_eq!(
            names(&passed),
            [
                "PATH",
                "HOME",
                "LC_ALL",
                "AWS_PROFILE",
                "AWS_ENDPOINT_URL_S3",
                "https_proxy"
            ]
        );
        assert_eq!(passed[0].1, OsString::from("value of PATH"));
    }

    #[test]
    fn pass_env_adds_names_and_prefixes_but_never_kfaas_own() {
        let vars = host(&["NODE_EXTRA_CA_CERTS", "MY_A", "MY_B", "MYX", "KFAAS_LOG"]);
        let extra = ["NODE_EXTRA_CA_CERTS".to_owned(), "MY_*".to_owned()];
        assert_eq!(
            names(&passed_host_env(vars.clone(), &extra)),
            ["NODE_EXTRA_CA_CERTS", "MY_A", "MY_B"]
        );
        assert_eq!(
            names(&passed_host_env(vars, &["*".to_owned()])),
            ["NODE_EXTRA_CA_CERTS", "MY_A", "MY_B", "MYX"]
        );
    }

    #[test]
    fn pass_env_names_are_checked() {
        let ok = ["NODE_EXTRA_CA_CERTS", "MY_*", "*", "x1"].map(String::from);
        assert_eq!(check_pass_env(&ok), Ok(()));
        for bad in ["", "A=B", "MY-VAR", "A*B", "**"] {
            let err = check_pass_env(&[bad.to_owned()]).expect_err(bad);
            assert_eq!(err, BadPassEnv(bad.to_owned()));
            assert!(err.to_string().contains("not a variable name"), "{err}");
        }
    }
}
